"""The learner's metrics: training, lag, prequential and held-out accuracy, forgetting, drift
adaptation and the versions it writes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from streaming.drift import DRIFT_ACTIONS
from streaming.metrics import MetricGroup, at_zero

__all__ = ["LearnerMetrics"]


class LearnerMetrics(MetricGroup):
    """What the learner process reports, beside the families every process reports."""

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        super().__init__(registry, shared)
        self._training(registry)
        self._evaluation(registry)
        self._adaptation(registry)

    def _training(self, r: CollectorRegistry) -> None:
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
        self.duplicates = Counter(
            "streamcl_learner_duplicates",
            "Labeled examples read again whose id the lineage already took: not trained again (the first wins)",
            registry=r,
        )
        self.labels_known = Gauge("streamcl_model_labels", "Labels the newest model knows", registry=r)
        self.versions_written = Counter("streamcl_model_versions_written", "Model versions written", registry=r)
        self.checkpoint_fallbacks = Counter(
            "streamcl_learner_checkpoint_fallbacks",
            "Versions the learner could not resume from (corrupt or partial) and skipped for an older one",
            registry=r,
        )

    def _evaluation(self, r: CollectorRegistry) -> None:
        self.prequential = Gauge(
            "streamcl_prequential_accuracy", "Accuracy of predict-then-train on recent labeled examples", registry=r
        )
        self.prequential_domain = Gauge(
            "streamcl_prequential_domain_accuracy", "Prequential accuracy per domain", ["domain"], registry=r
        )
        # held-out evaluation of each version
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

    def _adaptation(self, r: CollectorRegistry) -> None:
        self.drift_actions = at_zero(
            Counter("streamcl_drift_actions", "What the learner did on drift, by action", ["action"], registry=r),
            DRIFT_ACTIONS,
        )
        self.lr_multiplier = Gauge(
            "streamcl_learner_lr_multiplier", "Learning-rate multiplier (above 1 while adapting to drift)", registry=r
        )
