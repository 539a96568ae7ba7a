"""Rolling accuracy over a window of outcomes: the joiner's live accuracy of served
predictions and the learner's prequential accuracy."""

from __future__ import annotations

from collections import deque


class RollingAccuracy:
    """Accuracy over the last ``window`` outcomes, overall and per domain.

    >>> acc = RollingAccuracy(window=2)
    >>> for correct in (False, True, True):
    ...     acc.add(correct, "news")
    >>> acc.value, acc.per_domain(), acc.totals
    (1.0, {'news': 1.0}, {'correct': 2, 'wrong': 1})
    """

    def __init__(self, window: int = 500) -> None:
        self.window = window
        self._all: deque[bool] = deque(maxlen=window)
        self._domains: dict[str, deque[bool]] = {}
        self.totals = {"correct": 0, "wrong": 0}

    def add(self, correct: bool, domain: str | None) -> None:
        self._all.append(correct)
        self.totals["correct" if correct else "wrong"] += 1
        if domain is not None:
            self._domains.setdefault(domain, deque(maxlen=self.window)).append(correct)

    @property
    def value(self) -> float | None:
        return sum(self._all) / len(self._all) if self._all else None

    def per_domain(self) -> dict[str, float]:
        return {d: sum(q) / len(q) for d, q in self._domains.items() if q}
