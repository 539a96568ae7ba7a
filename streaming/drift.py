"""Drift detectors behind one small interface.

A detector takes observations one at a time (``update``) and returns a :class:`Detection`
when it decides the stream changed. Three kinds:

- ``input``: :class:`EmbeddingKS` compares a reference window of text embeddings with the
  most recent window, a two-sample Kolmogorov-Smirnov test per embedding dimension with a
  Bonferroni correction;
- ``prediction``: :class:`LabelPSI`, the population stability index between the predicted
  label distribution of a reference window and of the recent window;
- ``concept``: River's detectors (ADWIN, Page-Hinkley, KSWIN, DDM) on the stream of
  prequential errors (1 = the model was wrong), wrapped by :class:`RiverDetector`.

Bad observations (NaN, wrong shape, no label) are skipped and counted in ``skipped`` by
reason; a detector never raises because of its input.

>>> psi = LabelPSI(reference_size=4, window_size=4, step=1, threshold=0.5)
>>> [psi.update(x) for x in "aaaa"] == [None] * 4
True
>>> any(psi.update(x) for x in "bbbb")
True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

KINDS = ("input", "prediction", "concept")
#: What a drift-aware learner can do when drift is detected.
DRIFT_ACTIONS = ("snapshot", "boost", "reset")


@dataclass(frozen=True, slots=True)
class Detection:
    """One alarm: which detector, its score against its threshold, after how many observations."""

    detector: str
    kind: str
    score: float
    threshold: float
    at: int
    detail: dict[str, Any] = field(default_factory=dict)


class Detector(ABC):
    """Observations in, detections out. ``score`` is the latest statistic (higher = more
    drift), ``threshold`` the score at which it fires (NaN where the detector has none)."""

    name: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self) -> None:
        self.seen = 0
        self.detections = 0
        self.score = 0.0
        self.threshold = math.nan
        self.skipped: Counter[str] = Counter()

    def update(self, x: Any) -> Detection | None:
        """Take one observation; a :class:`Detection` when drift is detected, else None."""
        value = self._check(x)
        if value is None:
            return None
        self.seen += 1
        fired = self._update(value)
        if fired is None:
            return None
        self.detections += 1
        score, detail = fired
        return Detection(self.name, self.kind, score, self.threshold, self.seen, detail)

    def update_many(self, xs: Iterable[Any]) -> list[Detection]:
        return [d for d in map(self.update, xs) if d is not None]

    def _skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    @abstractmethod
    def _check(self, x: Any) -> Any | None:
        """The observation in the form ``_update`` takes, or None (counted) when unusable."""

    @abstractmethod
    def _update(self, value: Any) -> tuple[float, dict[str, Any]] | None:
        """(score, detail) when drift is detected."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the reference: start over from the next observations."""


class _TwoWindow(Detector):
    """A reference window filled first, then a sliding recent window tested every ``step``.
    After a detection the newest ``reseed`` observations start the next reference."""

    def __init__(self, reference_size: int, window_size: int, step: int, reseed: int | None = None) -> None:
        super().__init__()
        if reference_size < 2 or window_size < 2 or step < 1:
            raise ValueError("reference_size and window_size must be at least 2, step at least 1")
        self.reference_size = reference_size
        self.window_size = window_size
        self.step = step
        self.reseed = min(window_size, step * 2) if reseed is None else reseed
        self.reference: list[Any] = []
        self.window: deque[Any] = deque(maxlen=window_size)
        self._since_test = 0

    def _update(self, value: Any) -> tuple[float, dict[str, Any]] | None:
        if len(self.reference) < self.reference_size:
            self.reference.append(value)
            return None
        self.window.append(value)
        self._since_test += 1
        if len(self.window) < self.window_size or self._since_test < self.step:
            return None
        self._since_test = 0
        score, detail = self._test()
        self.score = score
        if not score >= self.threshold:  # NaN never fires
            return None
        newest = list(self.window)[-self.reseed :] if self.reseed else []
        self.reference = newest
        self.window.clear()
        return score, detail

    @abstractmethod
    def _test(self) -> tuple[float, dict[str, Any]]: ...

    def reset(self) -> None:
        self.reference = []
        self.window.clear()
        self._since_test = 0
        self.score = 0.0


def kolmogorov_sf(lam: np.ndarray) -> np.ndarray:
    """P(K > lam) of the Kolmogorov distribution (the asymptotic two-sample KS p-value)."""
    lam = np.asarray(lam, dtype=np.float64)[..., None]
    k = np.arange(1, 101, dtype=np.float64)
    terms = 2.0 * ((-1.0) ** (k - 1)) * np.exp(-2.0 * k * k * lam * lam)
    p = terms.sum(-1)
    return np.clip(np.where(lam[..., 0] < 0.3, 1.0, p), 0.0, 1.0)


def ks_pvalues(reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Two-sample KS p-value of every column (asymptotic, with Stephens' small-sample term).

    The statistic is taken at every observed value with both empirical CDFs evaluated to
    the right of it, so tied values (a repeated text) do not inflate it."""
    n, m = len(reference), len(window)
    ref = np.sort(reference, axis=0)
    win = np.sort(window, axis=0)
    d = np.empty(reference.shape[1])
    for j in range(reference.shape[1]):
        at = np.concatenate([ref[:, j], win[:, j]])
        cdf_ref = np.searchsorted(ref[:, j], at, side="right") / n
        cdf_win = np.searchsorted(win[:, j], at, side="right") / m
        d[j] = np.abs(cdf_ref - cdf_win).max()
    en = math.sqrt(n * m / (n + m))
    return kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


class EmbeddingKS(_TwoWindow):
    """Input drift: per-dimension KS between reference and recent embeddings, Bonferroni
    corrected. ``score`` is -log10 of the corrected p-value; fires when it is below ``alpha``."""

    name = "ks"
    kind = "input"

    def __init__(
        self, reference_size: int = 300, window_size: int = 150, step: int = 25, alpha: float = 1e-4, **kw: Any
    ) -> None:
        super().__init__(reference_size, window_size, step, **kw)
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self.threshold = -math.log10(alpha)
        self._dim: int | None = None

    def _check(self, x: Any) -> np.ndarray | None:
        try:
            v = np.asarray(x, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            self._skip("not_a_vector")
            return None
        if v.size == 0:
            self._skip("empty")
            return None
        if not np.isfinite(v).all():
            self._skip("nan")
            return None
        if self._dim is None:
            self._dim = v.size
        elif v.size != self._dim:
            self._skip("wrong_dimension")
            return None
        return v

    def _test(self) -> tuple[float, dict[str, Any]]:
        ref = np.stack(self.reference)
        win = np.stack(self.window)
        p = ks_pvalues(ref, win)
        corrected = float(min(1.0, p.min() * p.size))
        score = -math.log10(max(corrected, 1e-300))
        return score, {"p_value": corrected, "dimensions_shifted": int((p * p.size < self.alpha).sum())}


class LabelPSI(_TwoWindow):
    """Prediction drift: population stability index of the predicted labels (reference vs
    recent window), with ``epsilon`` for labels one side never saw."""

    name = "psi"
    kind = "prediction"

    def __init__(
        self,
        reference_size: int = 300,
        window_size: int = 300,
        step: int = 50,
        threshold: float = 0.25,
        epsilon: float = 1e-3,
        **kw: Any,
    ) -> None:
        super().__init__(reference_size, window_size, step, **kw)
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = threshold
        self.epsilon = epsilon

    def _check(self, x: Any) -> str | None:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            self._skip("no_label")
            return None
        return str(x)

    def _test(self) -> tuple[float, dict[str, Any]]:
        ref, win = Counter(self.reference), Counter(self.window)
        labels = sorted(set(ref) | set(win))
        p = np.array([ref[k] / len(self.reference) for k in labels]) + self.epsilon
        q = np.array([win[k] / len(self.window) for k in labels]) + self.epsilon
        p, q = p / p.sum(), q / q.sum()
        psi = float(((q - p) * np.log(q / p)).sum())
        return psi, {"reference": dict(ref), "recent": dict(win)}


class RiverDetector(Detector):
    """Concept drift: a River detector over the prequential error stream (1 = wrong)."""

    kind = "concept"

    def __init__(self, name: str, **params: Any) -> None:
        super().__init__()
        if name not in RIVER_DETECTORS:
            raise ValueError(f"unknown concept detector {name!r}; valid: {', '.join(RIVER_DETECTORS)}")
        self.name = name  # type: ignore[misc]
        self.params = params
        self._make = RIVER_DETECTORS[name]
        self._detector = self._make(**params)
        self._recent: deque[float] = deque(maxlen=100)

    def _check(self, x: Any) -> float | None:
        try:
            v = float(x)
        except (TypeError, ValueError):
            self._skip("not_a_number")
            return None
        if not math.isfinite(v):
            self._skip("nan")
            return None
        return v

    def _update(self, value: float) -> tuple[float, dict[str, Any]] | None:
        self._recent.append(value)
        self._detector.update(value)
        self.score = sum(self._recent) / len(self._recent)
        if not self._detector.drift_detected:
            return None
        return self.score, {"recent_error_rate": self.score}

    def reset(self) -> None:
        self._detector = self._make(**self.params)
        self._recent.clear()
        self.score = 0.0


def _adwin(**kw: Any) -> Any:
    from river.drift import ADWIN

    return ADWIN(**kw)


def _page_hinkley(**kw: Any) -> Any:
    from river.drift import PageHinkley

    return PageHinkley(**{"mode": "up", **kw})


def _kswin(**kw: Any) -> Any:
    from river.drift import KSWIN

    return KSWIN(**{"seed": 0, **kw})


def _ddm(**kw: Any) -> Any:
    from river.drift.binary import DDM

    return DDM(**kw)


#: River's concept-drift detectors by the name used in settings and metrics.
RIVER_DETECTORS: dict[str, Callable[..., Any]] = {
    "adwin": _adwin,
    "page_hinkley": _page_hinkley,
    "kswin": _kswin,
    "ddm": _ddm,
}

#: Every detector name and its kind (metrics start each one's counters at zero).
DETECTOR_KINDS: dict[str, str] = {
    EmbeddingKS.name: "input",
    LabelPSI.name: "prediction",
    **dict.fromkeys(RIVER_DETECTORS, "concept"),
}


def concept_detectors(names: Iterable[str]) -> list[RiverDetector]:
    return [RiverDetector(n) for n in names]


__all__ = [
    "DETECTOR_KINDS",
    "KINDS",
    "RIVER_DETECTORS",
    "Detection",
    "Detector",
    "EmbeddingKS",
    "LabelPSI",
    "RiverDetector",
    "concept_detectors",
    "ks_pvalues",
]
