"""The one replay memory every rehearsing strategy keeps: a bounded sample of the stream.

It holds at most ``size`` examples *and* at most ``fraction`` of the examples seen so far,
kept by one of three policies (``STREAMCL_REPLAY_POLICY``, one meaning for every strategy):

* ``reservoir``: a uniform sample of the stream (every example seen about equally likely).
* ``class_balanced``: a full memory makes room by evicting from its largest label, and an
  example of a largest label replaces one of its own label with probability kept / seen
  (class-balanced reservoir sampling, Chrysakis & Moens, ICML 2020).
* ``domain_class_balanced``: the same over (domain, label) pairs.

One random source (a ``random.Random`` the learner seeds and saves), one state format (JSON
rows ``[text, label, domain, logits or null]``, then the example's id when it has one, so
:meth:`ReplayMemory.forget` finds it; rows without one load as before). Tensors are made by whoever samples it.
Pure Python: importing it costs nothing.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, Field

from learners.base import Example

POLICIES = ("reservoir", "class_balanced", "domain_class_balanced")


class ReplaySettings(BaseModel):
    """The replay memory's settings (``STREAMCL_REPLAY_*``), shared by the strategies that replay."""

    replay_buffer: int = Field(
        2000, ge=1, le=100_000, description="replay, er-ace, replay-lwf, der: most examples kept in the replay buffer"
    )
    replay_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="replay, er-ace, replay-lwf, der: the replay buffer holds at most this share of the examples "
        "streamed so far",
    )
    replay_ratio: float | None = Field(
        None,
        gt=0,
        le=8,
        description="replay, er-ace, replay-lwf, der: replayed examples per new example in a step; unset: 0.1 for "
        "er-ace (the default: as accurate as 0.25 on eight streams, 3 seeds, and faster), 0.25 for the others",
    )
    replay_policy: Literal["reservoir", "class_balanced", "domain_class_balanced"] = Field(
        "domain_class_balanced",
        description="what the replay buffer and the A-GEM/GEM memories keep: reservoir (a uniform sample of "
        "the stream), class_balanced (an equal share per label) or domain_class_balanced (an equal share per "
        "label within each domain)",
    )


#: The replayed share each strategy takes when ``STREAMCL_REPLAY_RATIO`` is unset.
DEFAULT_RATIO = {"er-ace": 0.1}
OTHER_RATIO = 0.25


def replay_ratio(setting: float | None, strategy: str) -> float:
    """``STREAMCL_REPLAY_RATIO``, or the strategy's own default when it is unset."""
    return setting if setting is not None else DEFAULT_RATIO.get(strategy, OTHER_RATIO)


def balance_key(ex: Example, policy: str) -> str:
    """What the balanced policies give equal shares to: the label, or for
    ``domain_class_balanced`` the label within its domain."""
    return f"{ex.domain or ''}\t{ex.label}" if policy == "domain_class_balanced" else ex.label


def rng_state(rng: random.Random) -> list[Any]:
    """``rng``'s state as JSON."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    """Put back what :func:`rng_state` saved."""
    version, internal, gauss = state
    rng.setstate((int(version), tuple(int(x) for x in internal), gauss))


class ReplayMemory:
    """At most ``size`` examples and at most ``fraction`` of those seen so far, kept by
    ``policy`` (see the module), each with the logits it was stored with (or None)."""

    def __init__(self, size: int, fraction: float, policy: str, rng: random.Random) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown replay_policy {policy!r}; valid: {', '.join(POLICIES)}")
        self.size, self.fraction, self.policy = size, fraction, policy
        self.items: list[Example] = []
        self.logits: list[list[float] | None] = []  # each item's logits when it was trained on
        self.seen = 0
        self.group_seen: Counter[str] = Counter()
        self._rng = rng

    def __len__(self) -> int:
        return len(self.items)

    def group(self, ex: Example) -> str:
        return balance_key(ex, self.policy)

    def capacity(self) -> int:
        return min(self.size, math.floor(self.fraction * self.seen + 1e-9))

    def add(self, ex: Example, logits: list[float] | None = None) -> None:
        self.seen += 1
        self.group_seen[self.group(ex)] += 1
        if len(self.items) < self.capacity():
            self.items.append(ex)
            self.logits.append(logits)
        elif self.items and self.policy == "reservoir":
            j = self._rng.randrange(self.seen)
            if j < len(self.items):
                self.items[j], self.logits[j] = ex, logits
        elif self.items:
            self._balanced_replace(ex, logits)

    def _balanced_replace(self, ex: Example, logits: list[float] | None) -> None:
        group = self.group(ex)
        counts = Counter(self.group(item) for item in self.items)
        top = max(counts.values())
        if counts.get(group, 0) < top:  # not a largest group: evict from one of those
            victim = self._rng.choice(sorted(g for g, n in counts.items() if n == top))
        elif self._rng.random() < counts[group] / self.group_seen[group]:
            victim = group
        else:
            return
        slots = [i for i, item in enumerate(self.items) if self.group(item) == victim]
        j = self._rng.choice(slots)
        self.items[j], self.logits[j] = ex, logits

    def extend(self, examples: list[Example], logits: list[list[float]] | None = None) -> None:
        """:meth:`add` each example in order (with its logits, when given)."""
        for i, ex in enumerate(examples):
            self.add(ex, logits[i] if logits is not None else None)

    def sample(self, k: int) -> list[int]:
        """Positions of ``k`` random items (fewer when it holds fewer)."""
        return self._rng.sample(range(len(self.items)), min(k, len(self.items)))

    def state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "group_seen": dict(self.group_seen),
            "buffer": [_row(ex, lg) for ex, lg in zip(self.items, self.logits, strict=True)],
        }

    def load(self, state: dict[str, Any]) -> None:
        self.seen = int(state.get("seen", 0))
        self.group_seen = Counter({str(k): int(v) for k, v in state.get("group_seen", {}).items()})
        rows = state.get("buffer", [])[: self.size]
        self.items = [Example(str(row[0]), str(row[1]), row[2], str(row[4]) if len(row) > 4 else None) for row in rows]
        self.logits = [[float(x) for x in row[3]] if len(row) > 3 and row[3] is not None else None for row in rows]

    def forget(self, ids: Collection[str]) -> list[str]:
        """Take out the items whose id is in ``ids`` (erasure); returns their texts. The counts
        of examples seen stay: they say how much streamed, not what."""
        wanted = set(ids)
        gone = [i for i, ex in enumerate(self.items) if ex.id is not None and ex.id in wanted]
        texts = [self.items[i].text for i in gone]
        for i in reversed(gone):
            del self.items[i], self.logits[i]
        return texts


def _row(ex: Example, logits: list[float] | None) -> list[Any]:
    """An item as a JSON row: ``[text, label, domain, logits]``, and its id when it has one."""
    row: list[Any] = [ex.text, ex.label, ex.domain, logits]
    return row if ex.id is None else [*row, ex.id]


__all__ = ["POLICIES", "ReplayMemory", "ReplaySettings", "balance_key", "rng_state", "set_rng_state"]
