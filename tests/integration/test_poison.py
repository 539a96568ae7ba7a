"""Poison records on a real broker: one of each kind (nested 10,000 deep, 1 MB of one field,
invalid UTF-8, a wrong type, an unknown event version; and two that parse but cannot be
published again: a lone surrogate, an infinite timestamp) among good ones on the texts,
feedback and labeled topics. Each goes to the DLQ once with its reason; every good record is processed
exactly once (joined once, trained once in the lineage); no step raises."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import CollectorRegistry

from learners.metrics import LearnerMetrics
from learners.service import LearnerService
from learners.settings import LearnerSettings
from services.metrics import MonitorMetrics
from services.monitor import DriftMonitor
from services.settings import MonitorSettings
from streaming.events import DeadLetter, FeedbackEvent, LabeledExample, TextEvent
from streaming.joiner import JoinerMetrics, JoinerService
from streaming.kafka import Consumer, Producer
from streaming.metrics import sample_value

pytestmark = pytest.mark.integration

MB = 1_000_000
DEEP = b"[" * 10_000 + b"]" * 10_000
#: A fast learner that trains every example and writes a version only when told.
SMALL_LEARNER = {"strategy": "naive", "max_length": 24, "trainable_layers": 0, "batch_size": 16}
SMALL_LEARNER |= {"version_every_n": 10_000, "version_every_s": 3600, "eval_holdout_every": 0}


def poisons(good: dict[str, object], big: str, wrong: str) -> list[tuple[bytes, str]]:
    """The poison kinds built on a good event, with the reason each must get; ``big`` is the
    field made 1 MB long (and given a lone surrogate), ``wrong`` the field given a wrong type."""
    big_reason = {"text": "text_too_long", "label": "invalid_label"}[big]
    return [
        (DEEP, "invalid_json"),
        (json.dumps({**good, big: "x" * MB}).encode(), big_reason),
        (json.dumps(good).encode()[:-1] + b', "note": "\xc3\x28"}', "invalid_utf8"),
        (json.dumps({**good, wrong: {"not": "a string"}}).encode(), "wrong_type"),
        (json.dumps({**good, "v": 2}).encode(), "unsupported_version"),
        (json.dumps({**good, big: "a \ud800 b"}).encode(), "invalid_json"),
        (json.dumps({**good, "ts": 1e999}).encode(), "invalid_event"),
    ]


def publish(settings, topic: str, good: list[bytes], bad: list[tuple[bytes, str]]) -> dict[int, str]:
    """``good`` with ``bad`` spread among them; returns the reason expected at each bad offset."""
    p = Producer(settings)
    expected, spacing, offset = {}, len(good) // (len(bad) + 1), 0
    for i, value in enumerate(good):
        if i and i % spacing == 0 and len(expected) < len(bad):
            payload, reason = bad[len(expected)]
            p.send(topic, payload, key=f"poison{offset}")
            expected[offset] = reason
            offset += 1
        p.send(topic, value, key=f"k{i}")
        offset += 1
    p.flush()
    p.close()
    return expected


def read_all(settings, topic: str, at_least: int, timeout_s: float = 30.0) -> list:
    c = Consumer(settings, group_id=None)
    c.assign([topic])
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < at_least and time.monotonic() < deadline:
        out += c.poll(0.5)
    out += c.poll(1.0)  # and nothing more
    c.close()
    return out


def dead_letters(settings, n: int) -> dict[tuple[str, int], str]:
    dead = [DeadLetter.model_validate_json(r.value) for r in read_all(settings, settings.topics.dlq, n)]
    assert len(dead) == n, [(d.source_topic, d.offset, d.reason) for d in dead]
    return {(d.source_topic, d.offset): d.reason for d in dead}


def test_the_joiner_dead_letters_each_poison_once_and_joins_every_good_record_once(make_settings):
    s = make_settings()
    t, n = s.topics, 1_000
    texts = [TextEvent(id=f"id{i}", text=f"text number {i}").to_bytes() for i in range(n)]
    feedback = [FeedbackEvent(id=f"id{i}", label="pos" if i % 2 else "neg").to_bytes() for i in range(n)]
    bad_texts = publish(s, t.texts, texts, poisons({"id": "p", "text": "t"}, "text", "text"))
    bad_feedback = publish(s, t.feedback, feedback, poisons({"id": "p", "label": "l"}, "label", "id"))

    metrics = JoinerMetrics(CollectorRegistry())
    j = JoinerService(s, metrics)
    deadline = time.monotonic() + 60
    while j.counts["consumed"] < 2 * n + 14:
        assert time.monotonic() < deadline, j.status()
        j.step(0.2)  # a poison raising out of a step fails the test here
    j.close()

    assert (j.counts["joined"], j.counts["dlq"]) == (n, 14)
    labeled = [LabeledExample.model_validate_json(r.value) for r in read_all(s, t.labeled, n)]
    assert sorted(e.id for e in labeled) == sorted(f"id{i}" for i in range(n))  # each once
    want = {(t.texts, o): r for o, r in bad_texts.items()} | {(t.feedback, o): r for o, r in bad_feedback.items()}
    assert dead_letters(s, 14) == want
    text = metrics.exposition()
    for reason, count in {"invalid_json": 4, "invalid_utf8": 2, "wrong_type": 2, "unsupported_version": 2}.items():
        assert sample_value(text, "streamcl_dlq_events_total", {"reason": reason}) == count
    assert sample_value(text, "streamcl_dlq_events_total", {"reason": "text_too_long"}) == 1
    assert sample_value(text, "streamcl_dlq_events_total", {"reason": "invalid_label"}) == 1
    assert sample_value(text, "streamcl_dlq_events_total", {"reason": "invalid_event"}) == 2
    assert sample_value(text, "streamcl_events_consumed_total", {"topic": t.texts, "outcome": "dlq"}) == 7

    # the monitor reads the same texts: it counts the poisons, dead-letters nothing, goes on
    mon_metrics = MonitorMetrics(CollectorRegistry())
    mon = DriftMonitor(s, MonitorSettings(drift_max_texts_per_s=50), LearnerSettings(), mon_metrics)
    observed = {"topic": t.texts, "outcome": "observed"}
    deadline = time.monotonic() + 60
    while (sample_value(mon_metrics.exposition(), "streamcl_monitor_events_total", observed) or 0) < n:
        assert time.monotonic() < deadline, mon.status()
        mon.step(0.2)
    mon.close()
    invalid = {"topic": t.texts, "outcome": "invalid"}
    assert sample_value(mon_metrics.exposition(), "streamcl_monitor_events_total", invalid) == 7
    assert len(read_all(s, t.dlq, 15, timeout_s=2.0)) == 14


def test_the_learner_dead_letters_each_poison_once_and_trains_every_good_example_once(make_settings, tmp_path):
    s = make_settings()
    n = 100
    good = [LabeledExample(id=f"e{i}", text=f"good text {i}", label=("pos", "neg")[i % 2]).to_bytes() for i in range(n)]
    bad = publish(s, s.topics.labeled, good, poisons({"id": "p", "text": "t", "label": "l"}, "label", "text"))

    settings = LearnerSettings(registry_uri=str(tmp_path / "registry"), **SMALL_LEARNER)
    svc = LearnerService(s, settings, LearnerMetrics(CollectorRegistry()))
    deadline = time.monotonic() + 120
    while svc.status()["offsets"].get(f"{s.topics.labeled}:0") != n + len(bad):
        assert time.monotonic() < deadline, svc.status()
        svc.step(0.2)
    svc.write_version()
    svc.close()

    lineage = svc.registry.lineage(svc.parent) or {}
    assert sorted(lineage["trained"]) == sorted(f"e{i}" for i in range(n))  # each once
    assert sorted(lineage["skipped"]) == sorted(f"{s.topics.labeled}:0:{o}" for o in bad)
    assert dead_letters(s, len(bad)) == {(s.topics.labeled, o): r for o, r in bad.items()}
