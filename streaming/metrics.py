"""streamcl's Prometheus metrics, built on a registry that is passed in, and the merge that
serves every process's metrics at one URL.

Each process (joiner, learner, Serve replica, controller) makes a :class:`Metrics` on its own
``CollectorRegistry`` and pushes the exposition text to the aggregator; the aggregator merges
the latest text of every source: counters and histograms are summed, gauges combined by the
rule of :data:`GAUGE_MERGE` (default: the maximum). A process exports only the parts it
owns, so no series is counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from streaming.drift import Detector
from streaming.events import DLQ_REASONS

prometheus_client.disable_created_metrics()

#: HTTP status codes of /v1/predict that start at zero.
PREDICT_CODES = ("200", "400", "401", "403", "413", "415", "422", "500", "503")
MODEL_ROLES = ("serving", "candidate")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The groups of metrics a process can own (see :class:`Metrics`).
PARTS = ("joiner", "learner", "controller", "serve", "monitor")
#: What a drift-aware learner can do when drift is detected.
DRIFT_ACTIONS = ("snapshot", "boost", "reset")

#: How gauges from several processes combine ("sum", "min", "last"); others: the maximum.
GAUGE_MERGE: dict[str, str] = {
    "streamcl_join_pending": "sum",
    "streamcl_learner_lag": "sum",
    "streamcl_serve_replicas_ready": "sum",
    "streamcl_replica_model_version": "min",
    "streamcl_model_version": "last",
}


class Metrics:
    """Every streamcl metric, registered on ``registry`` (counters with known labels at 0)."""

    def __init__(self, registry: CollectorRegistry, parts: Iterable[str] | None = None) -> None:
        self.registry = registry
        wanted = set(PARTS if parts is None else parts)
        unknown = wanted - set(PARTS)
        if unknown:
            raise ValueError(f"unknown metric parts {sorted(unknown)}; valid: {PARTS}")

        def part(name: str) -> CollectorRegistry:
            # Metrics of other parts go to a registry nobody exports: code may touch them,
            # but a process only reports what it owns, so merged gauges are not overwritten.
            return registry if name in wanted else self._unexported

        self._unexported = CollectorRegistry(auto_describe=False)
        self._skips_reported: dict[str, dict[str, int]] = {}
        r = registry
        # ingest, join, DLQ
        self.consumed = Counter(
            "streamcl_events_consumed", "Messages consumed, by topic and outcome", ["topic", "outcome"], registry=r
        )
        self.produced = Counter("streamcl_events_produced", "Messages produced, by topic", ["topic"], registry=r)
        self.started = Gauge(
            "streamcl_component_start_time_seconds", "When each component process started", ["component"], registry=r
        )
        self.dlq = Counter("streamcl_dlq_events", "Messages sent to the DLQ, by reason", ["reason"], registry=r)
        for reason in DLQ_REASONS:
            self.dlq.labels(reason)
        r = part("joiner")
        self.joined = Counter("streamcl_join_joined", "Texts joined with their feedback", registry=r)
        self.join_expired = Counter(
            "streamcl_join_expired", "Texts whose feedback never came within the join window", registry=r
        )
        self.join_pending = Gauge(
            "streamcl_join_pending", "Texts and feedback waiting for their pair", ["kind"], registry=r
        )
        for kind in ("text", "feedback", "prediction"):
            self.join_pending.labels(kind)
        self.join_throttled = Gauge(
            "streamcl_join_throttled",
            "1 while the joiner holds back because the learner is more than backlog_max behind (throttle policy)",
            registry=r,
        )
        # learning
        r = part("learner")
        self.trained = Counter("streamcl_learner_examples_trained", "Labeled examples trained on", registry=r)
        self.held_out = Counter(
            "streamcl_learner_examples_held_out", "Labeled examples kept out of training for evaluation", registry=r
        )
        self.train_seconds = Counter("streamcl_learner_train_seconds", "Time spent training", registry=r)
        self.learner_lag = Gauge("streamcl_learner_lag", "Labeled examples not yet consumed by the learner", registry=r)
        self.backlog_skipped = Counter(
            "streamcl_learner_backlog_skipped",
            "Labeled examples consumed but not trained on because the learner was too far behind (sample policy)",
            registry=r,
        )
        self.labels_known = Gauge("streamcl_model_labels", "Labels the newest model knows", registry=r)
        self.prequential = Gauge(
            "streamcl_prequential_accuracy", "Accuracy of predict-then-train on recent labeled examples", registry=r
        )
        self.prequential_domain = Gauge(
            "streamcl_prequential_domain_accuracy", "Prequential accuracy per domain", ["domain"], registry=r
        )
        r = part("joiner")  # live accuracy: served predictions joined with feedback
        self.live = Gauge("streamcl_live_accuracy", "Accuracy of served predictions that received feedback", registry=r)
        self.live_domain = Gauge("streamcl_live_domain_accuracy", "Live accuracy per domain", ["domain"], registry=r)
        self.live_scored = Counter(
            "streamcl_live_scored", "Served predictions that received feedback", ["outcome"], registry=r
        )
        for outcome in ("correct", "wrong"):
            self.live_scored.labels(outcome)
        r = part("learner")  # held-out evaluation of each version
        self.domain_accuracy = Gauge(
            "streamcl_domain_accuracy",
            "Newest version's accuracy on each domain's held-out sample",
            ["domain"],
            registry=r,
        )
        self.domain_forgetting = Gauge(
            "streamcl_domain_forgetting",
            "Best earlier held-out accuracy of a domain minus the newest version's",
            ["domain"],
            registry=r,
        )
        self.average_accuracy = Gauge(
            "streamcl_average_accuracy", "Mean held-out accuracy over the domains seen", registry=r
        )
        self.forgetting = Gauge("streamcl_forgetting", "Mean forgetting over the domains seen", registry=r)
        self.backward_transfer = Gauge(
            "streamcl_backward_transfer",
            "Mean change of held-out accuracy, since they stopped streaming, of the domains no longer streaming",
            registry=r,
        )
        self.drift_actions = Counter(
            "streamcl_drift_actions", "What the learner did on drift, by action", ["action"], registry=r
        )
        for action in DRIFT_ACTIONS:
            self.drift_actions.labels(action)
        self.lr_multiplier = Gauge(
            "streamcl_learner_lr_multiplier", "Learning-rate multiplier (above 1 while adapting to drift)", registry=r
        )
        # drift: every process reports the detectors it runs (see track_detectors)
        r = registry
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
        r = part("monitor")
        self.monitor_texts = Counter(
            "streamcl_monitor_texts", "Texts seen by the drift monitor, by outcome", ["outcome"], registry=r
        )
        for outcome in ("embedded", "sampled_out", "unencodable"):
            self.monitor_texts.labels(outcome)
        self.monitor_events = Counter(
            "streamcl_monitor_events",
            "Events read by the drift monitor, by topic and outcome (observed, invalid)",
            ["topic", "outcome"],
            registry=r,
        )
        self.estimated_accuracy = Gauge(
            "streamcl_estimated_accuracy",
            "Label-free accuracy estimate of the serving model: mean top-class probability on live traffic",
            registry=r,
        )
        # versions
        r = part("controller")
        self.model_version = Gauge("streamcl_model_version", "Model version by role", ["role"], registry=r)
        for role in MODEL_ROLES:
            self.model_version.labels(role)
        r = part("serve")
        self.replica_version = Gauge(
            "streamcl_replica_model_version", "Oldest version a Serve replica answers with", registry=r
        )
        r = part("learner")
        self.versions_written = Counter("streamcl_model_versions_written", "Model versions written", registry=r)
        self.checkpoint_fallbacks = Counter(
            "streamcl_learner_checkpoint_fallbacks",
            "Versions the learner could not resume from (corrupt or partial) and skipped for an older one",
            registry=r,
        )
        r = part("controller")
        self.promotions = Counter("streamcl_model_promotions", "Versions promoted to serving", registry=r)
        self.rejections = Counter("streamcl_model_rejections", "Candidates refused by the gate", registry=r)
        self.rollbacks = Counter("streamcl_model_rollbacks", "Rollbacks to an earlier version", registry=r)
        self.shadow_version = Gauge(
            "streamcl_shadow_version", "Candidate version in shadow mode now (0: none)", registry=r
        )
        self.shadow_texts = Gauge("streamcl_shadow_texts", "Live texts the shadowed candidate scored", registry=r)
        self.shadow_labeled = Gauge(
            "streamcl_shadow_labeled", "Shadowed texts with the serving prediction and feedback", registry=r
        )
        self.shadow_agreement = Gauge(
            "streamcl_shadow_agreement",
            "Share of shadowed live texts where the candidate gives the serving version's label",
            registry=r,
        )
        self.shadow_accuracy = Gauge(
            "streamcl_shadow_accuracy",
            "Accuracy on shadowed live texts that received feedback, of the candidate and of the serving version",
            ["role"],
            registry=r,
        )
        for role in MODEL_ROLES:
            self.shadow_accuracy.labels(role)
        # serving
        r = part("serve")
        self.requests = Counter("streamcl_predict_requests", "Predict requests by HTTP status", ["code"], registry=r)
        for code in PREDICT_CODES:
            self.requests.labels(code)
        self.latency = Histogram(
            "streamcl_predict_latency_seconds", "Predict latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.predicted = Counter("streamcl_predict_texts", "Texts classified", registry=r)
        self.feedback = Counter("streamcl_feedback_received", "Feedback labels received over HTTP", registry=r)
        self.events_dropped = Counter(
            "streamcl_serve_events_dropped",
            "Events the API could not hand to Kafka (queue full or Kafka failing), by kind",
            ["kind"],
            registry=r,
        )
        for kind in ("prediction_log", "feedback"):
            self.events_dropped.labels(kind)
        self.replicas_ready = Gauge("streamcl_serve_replicas_ready", "Serve replicas with a model loaded", registry=r)

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
