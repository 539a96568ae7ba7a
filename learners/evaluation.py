"""Held-out evaluation while streaming: every k-th example of a domain is kept out of
training (up to a number per domain) and each new version is scored on those samples, giving
per-domain accuracy, forgetting (best earlier accuracy of a domain minus the current one),
backward transfer (a domain's accuracy now minus its accuracy at the last version written while
it was still streaming, averaged over the domains no longer streaming), their averages, and the
accuracy matrix over versions."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypedDict

from learners.base import Example

HOLDOUT_FILE = "holdout.json"
DEFAULT_DOMAIN = "default"
RECENT = "recent"


class Evaluation(TypedDict):
    """A version's held-out figures (they go into its metrics)."""

    domain_accuracy: dict[str, float]
    domain_forgetting: dict[str, float]
    average_accuracy: float | None
    forgetting: float | None
    backward_transfer: float | None
    holdout_sizes: dict[str, int]


class Holdout:
    """The held-out samples and the best accuracy each domain ever had."""

    def __init__(self, every: int, per_domain: int, recent: int = 0) -> None:
        self.every = every
        self.per_domain = per_domain
        self.samples: dict[str, list[tuple[str, str]]] = {}
        self._ids: dict[str, list[str | None]] = {}  # each sample's id (None: unknown), for erasure
        # once a domain's sample is full, its every k-th example still stays out of training
        # in a window of the most recent ones (the promotion gate scores on both)
        self.recent: deque[tuple[str, str, str, str | None]] = deque(maxlen=max(recent, 1))
        self.keep_recent = recent > 0
        self.seen: dict[str, int] = {}
        self.best: dict[str, float] = {}
        self.best_size: dict[str, int] = {}  # the sample size ``best`` was measured on
        self.last: dict[str, float] = {}
        self.learned: dict[str, float] = {}  # accuracy at the last evaluation while it streamed
        self._streaming: set[str] = set()  # domains seen since the last evaluation

    def take(self, ex: Example) -> bool:
        """True when ``ex`` is held out (then it must not be trained on)."""
        if self.every <= 0:
            return False
        domain = ex.domain or DEFAULT_DOMAIN
        self._streaming.add(domain)
        n = self.seen.get(domain, 0)
        self.seen[domain] = n + 1
        kept = self.samples.setdefault(domain, [])
        if n % self.every != self.every - 1:
            return False
        if len(kept) < self.per_domain:
            kept.append((ex.text, ex.label))
            self._ids.setdefault(domain, []).append(getattr(ex, "id", None))
            return True
        if self.keep_recent:
            self.recent.append((ex.text, ex.label, domain, getattr(ex, "id", None)))
            return True
        return False

    def evaluate(self, predict: Callable[[Sequence[str]], Sequence[str | None]], batch: int = 64) -> Evaluation:
        """Score a model on every domain's sample; update best; return the figures."""
        accuracy: dict[str, float] = {}
        for domain, rows in self.samples.items():
            if not rows:
                continue
            correct = 0
            for i in range(0, len(rows), batch):
                chunk = rows[i : i + batch]
                preds = predict([t for t, _ in chunk])
                correct += sum(p == y for p, (_, y) in zip(preds, chunk))
            accuracy[domain] = correct / len(rows)
        forgetting = {}
        for domain, acc in accuracy.items():
            size = len(self.samples[domain])
            if self.best_size.get(domain) != size:  # a grown sample is a different test: start over
                self.best[domain], self.best_size[domain] = acc, size
            self.best[domain] = max(self.best[domain], acc)
            forgetting[domain] = self.best[domain] - acc
        self.last = accuracy
        transfer = {}
        for domain, acc in accuracy.items():
            if domain in self._streaming:
                self.learned[domain] = acc
            elif domain in self.learned:
                transfer[domain] = acc - self.learned[domain]
        self._streaming = set()
        n = len(accuracy)
        return {
            "domain_accuracy": accuracy,
            "domain_forgetting": forgetting,
            "average_accuracy": (sum(accuracy.values()) / n) if n else None,
            "forgetting": (sum(forgetting.values()) / n) if n else None,
            "backward_transfer": (sum(transfer.values()) / len(transfer)) if transfer else None,
            "holdout_sizes": {d: len(r) for d, r in self.samples.items()},
        }

    def save(self, folder: Path) -> None:
        state = {
            "every": self.every,
            "samples": {d: [_row((*r, i)) for r, i in zip(rows, self.ids(d))] for d, rows in self.samples.items()},
            "seen": self.seen,
            "best": self.best,
            "best_size": self.best_size,
            "learned": self.learned,
            "recent": [_row(r) for r in self.recent] if self.keep_recent else [],
        }
        (folder / HOLDOUT_FILE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    def load(self, folder: Path) -> bool:
        """Resume from a version folder's sample (False when it has none)."""
        path = folder / HOLDOUT_FILE
        if not path.is_file():
            return False
        state = json.loads(path.read_text(encoding="utf-8"))
        samples = state.get("samples", {})
        self.samples = {d: [(str(r[0]), str(r[1])) for r in rows] for d, rows in samples.items()}
        self._ids = {d: [_id(r, 2) for r in rows] for d, rows in samples.items()}
        self.seen = {d: int(n) for d, n in state.get("seen", {}).items()}
        self.best = {d: float(a) for d, a in state.get("best", {}).items()}
        self.best_size = {d: int(n) for d, n in state.get("best_size", {}).items()}
        self.learned = {d: float(a) for d, a in state.get("learned", {}).items()}
        self.recent.clear()
        if self.keep_recent:
            self.recent.extend((str(r[0]), str(r[1]), str(r[2]), _id(r, 3)) for r in state.get("recent", []))
        return True

    def ids(self, domain: str) -> list[str | None]:
        """The ids of ``domain``'s samples, in order (None where unknown)."""
        known = self._ids.get(domain, [])
        return known + [None] * (len(self.samples.get(domain, [])) - len(known))

    def forget(self, ids: Collection[str]) -> list[str]:
        """Take the samples whose id is in ``ids`` out (erasure); returns their texts. A domain's
        best accuracy is then measured on a smaller sample, so it starts over at the next evaluation."""
        wanted, texts = set(ids), []
        for domain, rows in self.samples.items():
            known = self.ids(domain)
            keep = [i is None or i not in wanted for i in known]
            texts += [r[0] for r, k in zip(rows, keep) if not k]
            self.samples[domain] = [r for r, k in zip(rows, keep) if k]
            self._ids[domain] = [i for i, k in zip(known, keep) if k]
        recent = [r for r in self.recent if r[3] is None or r[3] not in wanted]
        texts += [r[0] for r in self.recent if r[3] is not None and r[3] in wanted]
        self.recent.clear()
        self.recent.extend(recent)
        return texts


def _row(row: tuple[str | None, ...]) -> list[str | None]:
    """A sample as a JSON row: without its id when it has none (the format before erasure)."""
    return list(row) if row[-1] is not None else list(row[:-1])


def _id(row: list[Any], at: int) -> str | None:
    """The id of a stored row (rows written before erasure have none)."""
    return str(row[at]) if len(row) > at and row[at] is not None else None


def gate_rows(folder: Path) -> list[tuple[str, str, str]]:
    """``(text, label, group)`` rows no model of the lineage trained on, from a version's
    held-out state: every domain's retained sample (group = the domain) and the recent window
    (group ``recent``)."""
    path = folder / HOLDOUT_FILE
    if not path.is_file():
        return []
    state = json.loads(path.read_text(encoding="utf-8"))
    rows = [(str(r[0]), str(r[1]), str(d)) for d, kept in state.get("samples", {}).items() for r in kept]
    rows += [(str(r[0]), str(r[1]), RECENT) for r in state.get("recent", [])]
    return rows
