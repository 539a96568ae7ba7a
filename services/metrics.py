"""The metric groups of the processes ``services`` runs (model controller with its shadow, drift
monitor, Serve replicas), and every component's group in one place for the aggregator's
defaults and the docs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from learners.metrics import LearnerMetrics
from streaming.joiner import JoinerMetrics
from streaming.metrics import MetricGroup, at_zero

#: HTTP status codes of /v1/predict that start at zero.
PREDICT_CODES = ("200", "400", "401", "403", "413", "415", "422", "500", "503")
MODEL_ROLES = ("serving", "candidate")
#: Why the API refused a call before its model saw it, counted from zero: no token, a wrong token or
#: role, admin calls disabled, a label or domain over its bounds.
REFUSAL_REASONS = ("unauthorized", "forbidden", "admin_disabled", "invalid_label", "label_limit", "invalid_domain")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControllerMetrics(MetricGroup):
    """The model controller's metrics: versions by role, decisions, and its shadow's scores."""

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        super().__init__(registry, shared)
        r = registry
        self.model_version = at_zero(
            Gauge("streamcl_model_version", "Model version by role", ["role"], registry=r), MODEL_ROLES
        )
        self.promotions = Counter("streamcl_model_promotions", "Versions promoted to serving", registry=r)
        self.rejections = Counter("streamcl_model_rejections", "Candidates refused by the gate", registry=r)
        self.rollbacks = Counter("streamcl_model_rollbacks", "Rollbacks to an earlier version", registry=r)
        self.audit_failures = Counter(
            "streamcl_audit_failures",
            "Audit records of operators' actions not written everywhere (registry file, audit topic); the action "
            "stands and its answer says so (services/audit.py)",
            registry=r,
        )
        self.pointer_recoveries = at_zero(
            Counter(
                "streamcl_serving_pointer_recoveries",
                "Serving pointers found corrupt or lost and rewritten, by where the pointer came from "
                "(backup: its copy, nothing lost; versions: rebuilt from the versions' statuses, pin lost)",
                ["source"],
                registry=r,
            ),
            ("backup", "versions"),
        )
        self.unreadable_versions = Gauge(
            "streamcl_registry_unreadable_versions",
            "Versions left out of the registry's listing because their metadata cannot be read",
            registry=r,
        )
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
        self.shadow_accuracy = at_zero(
            Gauge(
                "streamcl_shadow_accuracy",
                "Accuracy on shadowed live texts that received feedback, of the candidate and of the serving version",
                ["role"],
                registry=r,
            ),
            MODEL_ROLES,
        )


class MonitorMetrics(MetricGroup):
    """The drift monitor's metrics (its detectors report through the shared drift families)."""

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        super().__init__(registry, shared)
        r = registry
        self.monitor_texts = at_zero(
            Counter("streamcl_monitor_texts", "Texts seen by the drift monitor, by outcome", ["outcome"], registry=r),
            ("embedded", "sampled_out", "unencodable"),
        )
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


class ServeMetrics(MetricGroup):
    """A Serve replica's metrics: requests, latency, texts, feedback, dropped events, its version."""

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        super().__init__(registry, shared)
        r = registry
        self.replica_version = Gauge(
            "streamcl_replica_model_version", "Oldest version a Serve replica answers with", registry=r
        )
        self.requests = at_zero(
            Counter("streamcl_predict_requests", "Predict requests by HTTP status", ["code"], registry=r), PREDICT_CODES
        )
        self.latency = Histogram(
            "streamcl_predict_latency_seconds", "Predict latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.predicted = Counter("streamcl_predict_texts", "Texts classified", registry=r)
        self.feedback = Counter("streamcl_feedback_received", "Feedback labels received over HTTP", registry=r)
        self.events_dropped = at_zero(
            Counter(
                "streamcl_serve_events_dropped",
                "Events the API could not hand to Kafka (queue full or Kafka failing), by kind",
                ["kind"],
                registry=r,
            ),
            ("prediction_log", "feedback"),
        )
        self.replicas_ready = Gauge("streamcl_serve_replicas_ready", "Serve replicas with a model loaded", registry=r)
        self.refused = at_zero(
            Counter(
                "streamcl_http_refused",
                "API calls refused by reason: unauthorized (401), forbidden and admin_disabled (403), invalid_label, "
                "label_limit and invalid_domain (422), on the model the path names (else the default one)",
                ["reason"],
                registry=r,
            ),
            REFUSAL_REASONS,
        )


class PlatformMetrics(MetricGroup):
    """What ``streamcl up`` itself reports: the embedded broker it supervises."""

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        super().__init__(registry, shared)
        self.broker_restarts = Counter(
            "streamcl_broker_restarts",
            "Restarts of the embedded broker by `streamcl up` after its process died (exit, kill -9)",
            registry=registry,
        )


#: Each reporting component and its metric group (the group its process builds).
GROUPS: dict[str, type[MetricGroup]] = {
    "joiner": JoinerMetrics,
    "learner": LearnerMetrics,
    "controller": ControllerMetrics,
    "serve": ServeMetrics,
    "monitor": MonitorMetrics,
    "platform": PlatformMetrics,
}


def all_metrics(registry: CollectorRegistry) -> dict[str, MetricGroup]:
    """Every component's group on ``registry``, the shared families declared once: the
    aggregator's defaults (every family exists at zero) and the reference docs."""
    shared = MetricGroup(registry)
    return {name: group(registry, shared) for name, group in GROUPS.items()}


def component_registries() -> dict[str, CollectorRegistry]:
    """Each component and the registry of what it exports, built as its process builds it."""
    return {name: group(CollectorRegistry()).registry for name, group in GROUPS.items()}
