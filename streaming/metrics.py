"""streamcl's Prometheus metrics: the base every component's metric group builds on, and the
merge that serves every process's metrics at one URL.

A process builds the :class:`MetricGroup` subclass of the component it runs (the joiner's in
:mod:`streaming.joiner`, the learner's in ``learners.metrics``, the controller's, the monitor's
and Serve's in ``services.metrics``) on a ``CollectorRegistry`` of its own, so it exports only
what it produces, and pushes the exposition text to the aggregator. The aggregator merges the
latest text of every source: counters and histograms are summed, gauges combined by the rule of
:data:`GAUGE_MERGE` (default: the maximum).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from streaming.drift import Detector
from streaming.events import DLQ_REASONS

prometheus_client.disable_created_metrics()

#: How gauges from several processes combine ("sum", "min", "last"); others: the maximum.
GAUGE_MERGE: dict[str, str] = {
    "streamcl_join_pending": "sum",
    "streamcl_learner_lag": "sum",
    "streamcl_serve_replicas_ready": "sum",
    "streamcl_replica_model_version": "min",
    "streamcl_model_version": "last",
}

M = TypeVar("M", bound=MetricWrapperBase)


def at_zero(metric: M, values: Iterable[str]) -> M:
    """``metric`` with the series of its known label ``values`` started at zero, so every series
    exists from the first scrape."""
    for value in values:
        metric.labels(value)
    return metric


#: The attributes of the families every process reports (declared once per registry).
SHARED = (
    "consumed",
    "produced",
    "send_failed",
    "started",
    "dlq",
    "drift_detected",
    "drift_score",
    "drift_threshold",
    "drift_skipped",
    "component_up",
    "step_errors",
    "push_failures",
)


class MetricGroup:
    """The metrics every process reports, on the registry passed in (never the global one).

    A component's group subclasses it and declares its own metrics after ``super().__init__``.
    With ``shared``, the common families are ``shared``'s, so several groups can live on one
    registry (the aggregator's defaults, the docs) without declaring them twice.
    """

    consumed: Counter
    produced: Counter
    send_failed: Counter
    started: Gauge
    dlq: Counter
    drift_detected: Counter
    drift_score: Gauge
    drift_threshold: Gauge
    drift_skipped: Counter
    component_up: Gauge
    step_errors: Counter
    push_failures: Counter

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        self.registry = registry
        self._skips_reported: dict[str, dict[str, int]] = {}
        if shared is not None:
            for name in SHARED:
                setattr(self, name, getattr(shared, name))
            return
        r = registry
        self.consumed = Counter(
            "streamcl_events_consumed", "Messages consumed, by topic and outcome", ["topic", "outcome"], registry=r
        )
        self.produced = Counter("streamcl_events_produced", "Messages produced, by topic", ["topic"], registry=r)
        self.send_failed = Counter(
            "streamcl_events_send_failed",
            "Messages a producer failed to send (never acknowledged), by topic",
            ["topic"],
            registry=r,
        )
        self.started = Gauge(
            "streamcl_component_start_time_seconds", "When each component process started", ["component"], registry=r
        )
        self.dlq = at_zero(
            Counter("streamcl_dlq_events", "Messages sent to the DLQ, by reason", ["reason"], registry=r), DLQ_REASONS
        )
        # drift: every process reports the detectors it runs (see track_detectors)
        self.drift_detected = Counter(
            "streamcl_drift_detected", "Drift detections by detector and kind", ["detector", "kind"], registry=r
        )
        self.drift_score = Gauge(
            "streamcl_drift_score",
            "Latest score of each drift detector (higher: more drift)",
            ["detector", "kind"],
            registry=r,
        )
        self.drift_threshold = Gauge(
            "streamcl_drift_threshold", "Score at which each drift detector fires", ["detector", "kind"], registry=r
        )
        self.drift_skipped = Counter(
            "streamcl_drift_skipped",
            "Observations a drift detector could not use, by reason",
            ["detector", "reason"],
            registry=r,
        )
        # health: set by the ServiceHost and the MetricsPusher of each process
        up = "1 while a component's service is built and its last step succeeded, 0 while it fails"
        self.component_up = Gauge("streamcl_component_up", up, ["component"], registry=r)
        errors = "Failed steps (and failed constructions) of a component's service loop"
        self.step_errors = Counter("streamcl_service_step_errors", errors, ["component"], registry=r)
        pushes = "Failed pushes of a process's metrics to the aggregator (sent with the next push that works)"
        self.push_failures = Counter("streamcl_metrics_push_failures", pushes, ["component"], registry=r)

    def track_detectors(self, detectors: Iterable[Detector]) -> None:
        """Start the counters of ``detectors`` at zero and publish their thresholds."""
        for d in detectors:
            self.drift_detected.labels(d.name, d.kind)
            self.drift_score.labels(d.name, d.kind).set(finite(d.score))
            self.drift_threshold.labels(d.name, d.kind).set(d.threshold)

    def observe_detector(self, d: Detector) -> None:
        """Publish ``d``'s latest score and the observations it skipped since the last call."""
        self.drift_score.labels(d.name, d.kind).set(finite(d.score))
        reported = self._skips_reported.setdefault(d.name, {})
        for reason, n in d.skipped.items():
            new = n - reported.get(reason, 0)
            if new > 0:
                self.drift_skipped.labels(d.name, reason).inc(new)
                reported[reason] = n

    def exposition(self) -> str:
        """This process's metrics in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry).decode("utf-8")


@dataclass(slots=True)
class _Merged:
    name: str
    documentation: str
    type: str
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]


Source = str | tuple[str, Mapping[str, str]]


def merge_expositions(
    texts: Iterable[Source],
    counters_only: Iterable[Source] = (),
    defaults: str | None = None,
    default_labels: Iterable[Mapping[str, str]] = ({},),
) -> str:
    """Merge Prometheus text expositions of several processes into one (see module doc).

    ``texts`` come oldest push first (the newest wins for "last" gauges); ``counters_only``
    are sources gone silent: their counters and histograms still count, their gauges not;
    ``defaults`` only fills series no source has (so every family exists from the start),
    once for each of ``default_labels``. A source may come with labels for all its series
    (``(text, {"model": "news"})``).
    """
    merged: dict[str, _Merged] = {}

    def split(source: Source) -> tuple[str, Mapping[str, str]]:
        return (source, {}) if isinstance(source, str) else source

    sources = [(*split(t), "stale") for t in counters_only] + [(*split(t), "fresh") for t in texts]
    if defaults is not None:
        sources += [(defaults, labels, "default") for labels in default_labels]
    for text, extra, kind in sources:
        for family in text_string_to_metric_families(text):
            if kind == "stale" and family.type == "gauge":
                continue
            into = merged.setdefault(family.name, _Merged(family.name, family.documentation, family.type, {}))
            rule = GAUGE_MERGE.get(family.name, "max") if family.type == "gauge" else "sum"
            for s in family.samples:
                key = (s.name, tuple(sorted({**s.labels, **extra}.items())))
                old = into.samples.get(key)
                value = s.value
                if kind == "default":
                    into.samples.setdefault(key, value)
                elif old is None or rule == "last":
                    into.samples[key] = value
                elif rule == "sum":
                    into.samples[key] = old + value
                elif rule == "max":
                    into.samples[key] = max(old, value)
                elif rule == "min":
                    into.samples[key] = min(old, value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StaticCollector(merged.values()))
    return prometheus_client.generate_latest(registry).decode("utf-8")


class _StaticCollector:
    def __init__(self, families: Iterable[_Merged]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        for f in self._families:
            metric = Metric(f.name, f.documentation, f.type)
            for (name, labels), value in f.samples.items():
                metric.add_sample(name, dict(labels), value)
            yield metric


def sample_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """One sample's value from an exposition (for status lines and tests)."""
    want = dict(labels or {})
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in want.items()):
                return s.value
    return None


def sample_sum(text: str, name: str) -> float | None:
    """The sum of every sample named ``name`` (None when there is none)."""
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return sum(values) if values else None


def finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default
