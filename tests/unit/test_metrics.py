import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from learners.metrics import LearnerMetrics
from services.metrics import GROUPS, ServeMetrics, all_metrics, component_registries
from services.metrics_server import defaults_exposition
from streaming.joiner import JoinerMetrics
from streaming.metrics import MetricGroup, merge_expositions, sample_value


def test_known_counters_start_at_zero():
    text = defaults_exposition()
    assert sample_value(text, "streamcl_dlq_events_total", {"reason": "invalid_json"}) == 0
    assert sample_value(text, "streamcl_predict_requests_total", {"code": "200"}) == 0
    assert sample_value(text, "streamcl_model_version", {"role": "serving"}) == 0


def test_a_process_exports_only_its_parts():
    m = JoinerMetrics(CollectorRegistry())
    assert not hasattr(m, "prequential")  # a joiner has no learner metric to touch
    text = m.exposition()
    assert sample_value(text, "streamcl_prequential_accuracy") is None
    assert sample_value(text, "streamcl_join_expired_total") == 0


def test_merge_sums_counters_and_combines_gauges():
    a = ServeMetrics(CollectorRegistry())
    b = ServeMetrics(CollectorRegistry())
    learner = LearnerMetrics(CollectorRegistry())
    a.requests.labels("200").inc(3)
    b.requests.labels("200").inc(4)
    a.latency.observe(0.01)
    b.latency.observe(0.2)
    a.replica_version.set(5)
    b.replica_version.set(4)
    learner.prequential.set(0.75)
    defaults = defaults_exposition()
    text = merge_expositions([a.exposition(), b.exposition(), learner.exposition()], defaults=defaults)
    assert sample_value(text, "streamcl_predict_requests_total", {"code": "200"}) == 7
    assert sample_value(text, "streamcl_predict_latency_seconds_count") == 2
    assert sample_value(text, "streamcl_replica_model_version") == 4  # the oldest replica
    assert sample_value(text, "streamcl_prequential_accuracy") == 0.75
    assert sample_value(text, "streamcl_join_joined_total") == 0  # from the defaults


def test_stale_sources_keep_counters_not_gauges():
    gone = ServeMetrics(CollectorRegistry())
    gone.requests.labels("200").inc(2)
    gone.replica_version.set(1)
    alive = ServeMetrics(CollectorRegistry())
    alive.replica_version.set(9)
    text = merge_expositions([alive.exposition()], counters_only=[gone.exposition()])
    assert sample_value(text, "streamcl_predict_requests_total", {"code": "200"}) == 2
    assert sample_value(text, "streamcl_replica_model_version") == 9


def test_every_metric_belongs_to_one_part():
    names = {}
    for part, registry in component_registries().items():
        for family in registry.collect():
            names.setdefault(family.name, []).append(part)
    shared = {
        "streamcl_component_up",
        "streamcl_service_step_errors",
        "streamcl_metrics_push_failures",
        "streamcl_events_send_failed",
        "streamcl_events_consumed",
        "streamcl_events_produced",
        "streamcl_dlq_events",
        "streamcl_component_start_time_seconds",
        # drift families: each process only fills the series of the detectors it runs
        "streamcl_drift_detected",
        "streamcl_drift_score",
        "streamcl_drift_threshold",
        "streamcl_drift_skipped",
    }
    assert {n: p for n, p in names.items() if len(p) > 1 and n not in shared} == {}
    joiner = {f.name for f in JoinerMetrics(CollectorRegistry()).registry.collect()}
    assert {"streamcl_live_accuracy", "streamcl_join_expired", "streamcl_join_pending"} <= joiner
    learner = {f.name for f in LearnerMetrics(CollectorRegistry()).registry.collect()}
    assert {"streamcl_prequential_accuracy", "streamcl_learner_examples_trained"} <= learner
    # the shared families are exactly those of the base, in every group
    base = {f.name for f in MetricGroup(CollectorRegistry()).registry.collect()}
    assert base == shared and all(names[n] == list(GROUPS) for n in shared)


def test_all_groups_share_one_registry_and_the_common_families():
    registry = CollectorRegistry()
    groups = all_metrics(registry)
    assert groups["joiner"].dlq is groups["serve"].dlq  # declared once
    families = {f.name for f in registry.collect()}
    assert families == {n for r in component_registries().values() for n in (f.name for f in r.collect())}


def test_groups_never_use_the_global_registry():
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    for group in GROUPS.values():
        group(CollectorRegistry())
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before


def test_a_group_twice_on_one_registry_is_refused():
    registry = CollectorRegistry()
    JoinerMetrics(registry)
    with pytest.raises(ValueError):
        JoinerMetrics(registry)


def test_merge_labels_each_source_by_model_and_fills_defaults_per_model():
    news = LearnerMetrics(CollectorRegistry())
    news.prequential.set(0.9)
    tickets = LearnerMetrics(CollectorRegistry())
    tickets.prequential.set(0.6)
    defaults = defaults_exposition()
    text = merge_expositions(
        [(news.exposition(), {"model": "news"}), (tickets.exposition(), {"model": "tickets"})],
        defaults=defaults,
        default_labels=[{"model": "news"}, {"model": "tickets"}],
    )
    # the same series of two models stay apart, not merged by the gauge rule
    assert sample_value(text, "streamcl_prequential_accuracy", {"model": "news"}) == 0.9
    assert sample_value(text, "streamcl_prequential_accuracy", {"model": "tickets"}) == 0.6
    # every family exists for every model, and nothing is left without a model label
    assert sample_value(text, "streamcl_join_joined_total", {"model": "tickets"}) == 0
    assert "model=" in text and all("model=" in line for line in text.splitlines() if line.startswith("streamcl_"))
