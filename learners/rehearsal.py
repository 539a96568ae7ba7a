"""Rehearsal learners: fine-tuning where every micro-batch is trained together with a few
examples drawn from a bounded buffer of the stream so far.

* ``replay``: experience replay, plain cross-entropy over new and replayed examples.
* ``er-ace``: experience replay with the asymmetric cross-entropy of ER-ACE (Caccia et al.,
  ICLR 2022, "New insights on reducing abrupt representation change in online continual
  learning"). A new example competes only against the labels present in its own micro-batch,
  so a burst of a new label does not push the old labels' logits down; replayed examples
  compete against every label. This is what keeps old classes alive on class-incremental
  streams with a small buffer and a small replay share, where plain replay forgets them.

The buffer holds at most ``buffer_size`` examples *and* at most ``buffer_fraction`` of the
examples streamed so far. ``class_balanced`` keeps an equal share per label (class-balanced
reservoir sampling, Chrysakis & Moens, ICML 2020); ``reservoir`` a uniform sample of the
stream. Buffer, random state and optimizer moments are part of every version (``replay.json``
and ``finetune.safetensors``), so a restarted learner continues exactly as it would have.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from learners.base import Example
from learners.finetune import FineTuneLearner
from learners.model import TextClassifier

STATE_FILE = "replay.json"
POLICIES = ("reservoir", "class_balanced", "domain_class_balanced")


def balance_key(ex: Example, policy: str) -> str:
    """What the balanced policies give equal shares to: the label, or for
    ``domain_class_balanced`` the label within its domain."""
    return f"{ex.domain or ''}\t{ex.label}" if policy == "domain_class_balanced" else ex.label


class ReplayBuffer:
    """At most ``size`` examples and at most ``fraction`` of those seen so far, kept by
    ``policy``: ``reservoir`` (every example seen about equally likely to be kept) or
    ``class_balanced`` (a full buffer makes room by evicting from its largest label, and an
    example of a largest label replaces one of its own label with probability kept / seen), or
    ``domain_class_balanced`` (the same over (domain, label) pairs)."""

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

    def sample(self, k: int) -> list[int]:
        """Positions of ``k`` random items (fewer when it holds fewer)."""
        return self._rng.sample(range(len(self.items)), min(k, len(self.items)))

    def state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "group_seen": dict(self.group_seen),
            "buffer": [[ex.text, ex.label, ex.domain, lg] for ex, lg in zip(self.items, self.logits, strict=True)],
        }

    def load(self, state: dict[str, Any]) -> None:
        self.seen = int(state.get("seen", 0))
        self.group_seen = Counter({str(k): int(v) for k, v in state.get("group_seen", {}).items()})
        rows = state.get("buffer", [])[: self.size]
        self.items = [Example(str(row[0]), str(row[1]), row[2]) for row in rows]
        self.logits = [[float(x) for x in row[3]] if len(row) > 3 and row[3] is not None else None for row in rows]


class ReplayLearner(FineTuneLearner):
    """Fine-tuning plus a replay buffer (see the module): each step trains on the new
    micro-batch and ``replay_ratio`` times as many replayed examples (rounded at random, so
    the ratio holds on average)."""

    name = "replay"

    def __init__(
        self,
        model: TextClassifier,
        buffer_size: int = 2000,
        buffer_fraction: float = 0.1,
        replay_ratio: float = 0.25,
        replay_policy: str = "domain_class_balanced",
        logit_alpha: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.logit_alpha = logit_alpha
        self.buffer_size = buffer_size
        self.buffer_fraction = buffer_fraction
        self.replay_ratio = replay_ratio
        self.replay_policy = replay_policy
        self._rng = random.Random(self.seed)
        self._buffer = ReplayBuffer(buffer_size, buffer_fraction, replay_policy, self._rng)
        self._replayed_logits: list[list[float] | None] = []
        self._new_logits: Tensor | None = None

    def learn(self, batch: Sequence[Example]) -> list[str | None]:
        if not batch:
            return []
        wanted = len(batch) * self.replay_ratio
        k = math.floor(wanted) + (self._rng.random() < wanted - math.floor(wanted))
        chosen = self._buffer.sample(k)
        self._replayed_logits = [self._buffer.logits[i] for i in chosen]
        preds = self._step(batch, [self._buffer.items[i] for i in chosen])
        stored = self._new_logits.tolist() if self.logit_alpha and self._new_logits is not None else None
        for i, ex in enumerate(batch):
            self._buffer.add(ex, stored[i] if stored else None)
        return preds

    def _objective(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        """The label loss, plus ``logit_alpha`` times the mean squared distance between the
        replayed examples' logits and the ones stored with them (over the labels known then:
        dark experience replay, Buzzega et al., NeurIPS 2020)."""
        self._new_logits = logits[:n_new].detach()
        loss = self._label_loss(logits, target, n_new)
        pairs = [(n_new + j, lg) for j, lg in enumerate(self._replayed_logits) if lg]
        if self.logit_alpha and pairs:
            terms = [F.mse_loss(logits[row, : len(lg)], torch.tensor(lg)) for row, lg in pairs]
            loss = loss + self.logit_alpha * torch.stack(terms).mean()
        return loss

    def _label_loss(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        return F.cross_entropy(logits, target)

    def save_state(self, folder: Path) -> None:
        super().save_state(folder)
        version, internal, gauss = self._rng.getstate()
        state = {**self._buffer.state(), "rng": [version, list(internal), gauss]}
        (folder / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    def load_state(self, folder: Path) -> None:
        super().load_state(folder)
        path = folder / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        self._buffer.load(state)
        if "rng" in state:
            version, internal, gauss = state["rng"]
            self._rng.setstate((int(version), tuple(int(x) for x in internal), gauss))


class ERACELearner(ReplayLearner):
    """Experience replay with the asymmetric cross-entropy of ER-ACE (see the module)."""

    name = "er-ace"

    def _label_loss(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        new, replayed = logits[:n_new], logits[n_new:]
        present = torch.zeros(logits.shape[1], dtype=torch.bool)
        present[target[:n_new]] = True
        losses = F.cross_entropy(new.masked_fill(~present, float("-inf")), target[:n_new], reduction="sum")
        if replayed.shape[0]:
            losses = losses + F.cross_entropy(replayed, target[n_new:], reduction="sum")
        return losses / target.shape[0]
