"""The joiner over a real broker: joins, DLQ, expiry, restart from its checkpoint, and a
broker paused past the producer's delivery timeout."""

import json
import os
import signal
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from streaming.events import DeadLetter, FeedbackEvent, LabeledExample, TextEvent
from streaming.joiner import JoinerMetrics, JoinerService
from streaming.kafka import Consumer, Producer

pytestmark = pytest.mark.integration


def read_all(settings, topic, n, timeout_s=20.0):
    c = Consumer(settings, group_id=None)
    c.assign([topic])
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += c.poll(0.5)
    c.close()
    return out


def run_until(service, predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {service.status()}"
        service.step(0.2)


def test_joins_both_orders_and_dead_letters_bad_input(make_settings):
    s = make_settings(join_ttl_s=2.0)
    p = Producer(s)
    t = s.topics
    p.publish(t.texts, TextEvent(id="a", text="first text", domain="d1"))
    p.publish(t.feedback, FeedbackEvent(id="b", label="neg"))  # feedback first
    p.send(t.texts, b"{broken", key="x")
    p.send(t.texts, b"\xff\xfe", key="y")
    p.send(t.feedback, json.dumps({"id": "c", "label": 7}).encode(), key="c")
    p.send(t.texts, json.dumps({"id": "e", "text": ""}).encode(), key="e")
    p.send(t.texts, json.dumps({"id": "f", "text": "x" * (s.max_text_chars + 1)}).encode(), key="f")
    p.publish(t.feedback, FeedbackEvent(id="a", label="pos"))
    p.publish(t.texts, TextEvent(id="b", text="second text"))
    p.publish(t.feedback, FeedbackEvent(id="orphan", label="pos"))
    p.publish(t.texts, TextEvent(id="lonely", text="never labeled"))
    p.flush()
    p.close()

    metrics = JoinerMetrics(CollectorRegistry())
    j = JoinerService(s, metrics)
    run_until(j, lambda: j.counts["joined"] == 2 and j.counts["dlq"] == 5)
    time.sleep(2.1)
    run_until(j, lambda: j.counts["dlq"] == 6 and j.counts["expired"] == 1)
    j.close()

    labeled = [LabeledExample.model_validate_json(r.value) for r in read_all(s, t.labeled, 2)]
    assert {(e.id, e.text, e.label, e.domain) for e in labeled} == {
        ("a", "first text", "pos", "d1"),
        ("b", "second text", "neg", None),
    }
    dead = [DeadLetter.model_validate_json(r.value) for r in read_all(s, t.dlq, 6)]
    reasons = sorted(d.reason for d in dead)
    assert reasons == sorted(
        ["invalid_json", "invalid_utf8", "invalid_label", "empty_text", "text_too_long", "unjoined_feedback"]
    )
    assert next(d for d in dead if d.reason == "invalid_json").payload == "{broken"
    assert next(d for d in dead if d.reason == "invalid_utf8").payload_encoding == "base64"
    assert metrics.dlq.labels("unjoined_feedback")._value.get() == 1
    assert metrics.join_expired._value.get() == 1


def test_pending_state_survives_restart(make_settings):
    s = make_settings()
    p = Producer(s)
    for i in range(20):
        p.publish(s.topics.texts, TextEvent(id=f"id{i}", text=f"text {i}"))
    p.flush()
    j = JoinerService(s, JoinerMetrics(CollectorRegistry()))
    run_until(j, lambda: j.counts["consumed"] == 20)
    j.close()  # checkpoints pending texts with the offsets

    for i in range(20):
        p.publish(s.topics.feedback, FeedbackEvent(id=f"id{i}", label="L"))
    p.flush()
    p.close()
    j2 = JoinerService(s, JoinerMetrics(CollectorRegistry()))
    assert j2.state.pending()["text"] == 20
    run_until(j2, lambda: j2.counts["joined"] == 20)
    assert j2.counts["consumed"] == 20  # texts were not read twice
    j2.close()
    assert len(read_all(s, s.topics.labeled, 20)) == 20


def test_joiners_share_the_partitions_and_together_join_everything_once(make_settings):
    s = make_settings(topic_partitions=4, join_producer_process=False)
    p = Producer(s)
    for i in range(60):  # keyed by id: a text and its feedback land on the same partition number
        p.publish(s.topics.texts, TextEvent(id=f"id{i}", text=f"text {i}"))
        p.publish(s.topics.feedback, FeedbackEvent(id=f"id{i}", label="pos" if i % 2 else "neg"))
    p.flush()
    p.close()
    joiners = [JoinerService(s, JoinerMetrics(CollectorRegistry()), shard=(i, 2)) for i in range(2)]
    assert [j.status()["partitions"] for j in joiners] == [
        [f"{t}:{n}" for t in (s.topics.feedback, s.topics.predictions, s.topics.texts) for n in (0, 2)],
        [f"{t}:{n}" for t in (s.topics.feedback, s.topics.predictions, s.topics.texts) for n in (1, 3)],
    ]
    deadline = time.monotonic() + 30
    while sum(j.counts["joined"] for j in joiners) < 60:
        assert time.monotonic() < deadline, [j.status() for j in joiners]
        for j in joiners:
            j.step(0.2)
    assert all(j.counts["joined"] > 0 and j.counts["dlq"] == 0 for j in joiners)
    assert {j.checkpoint_path.name for j in joiners} == {"checkpoint-0-of-2.json", "checkpoint-1-of-2.json"}
    for j in joiners:
        j.close()
    labeled = read_all(s, s.topics.labeled, 60)
    ids = sorted(LabeledExample.model_validate_json(r.value).id for r in labeled)
    assert ids == sorted(f"id{i}" for i in range(60))
    with pytest.raises(ValueError, match="shard 2 of 2"):
        JoinerService(s, JoinerMetrics(CollectorRegistry()), shard=(2, 2))


def test_topics_that_are_not_co_partitioned_are_refused(make_settings):
    from streaming.errors import ConfigError
    from streaming.kafka import ensure_topics

    s = make_settings(topic_prefix=f"cp{time.time_ns()}", join_producer_process=False)  # 1 partition each
    other = s.model_copy(update={"topic_prefix": f"{s.topic_prefix}x"})
    ensure_topics(other, [other.topics.texts], partitions=2)
    ensure_topics(other, [other.topics.feedback, other.topics.predictions, other.topics.labeled, other.topics.dlq])
    with pytest.raises(ConfigError, match="co-partitioned"):
        JoinerService(other, JoinerMetrics(CollectorRegistry()))


def test_a_checkpoint_older_than_the_groups_offsets_is_set_aside(make_settings):
    s = make_settings(topic_partitions=2, join_producer_process=False)
    p = Producer(s)
    for i in range(20):
        p.publish(s.topics.texts, TextEvent(id=f"id{i}", text=f"text {i}"))
    p.flush()
    # two joiners checkpoint their pending texts, then one joiner takes over and goes further
    pair = [JoinerService(s, JoinerMetrics(CollectorRegistry()), shard=(i, 2)) for i in range(2)]
    for j in pair:
        run_until(j, lambda j=j: j.counts["consumed"] > 0)
        j.close()
    for i in range(20):
        p.publish(s.topics.feedback, FeedbackEvent(id=f"id{i}", label="pos"))
    p.flush()
    p.close()
    single = JoinerService(s, JoinerMetrics(CollectorRegistry()))
    run_until(single, lambda: single.counts["consumed"] == 20)  # the feedback; the texts were committed
    single.close()
    # back to two: their old checkpoints are behind the committed offsets, so they are not replayed
    again = [JoinerService(s, JoinerMetrics(CollectorRegistry()), shard=(i, 2)) for i in range(2)]
    assert sum(len(j.state) for j in again) == 0
    for j in again:
        j.step(0.5)
    assert sum(j.counts["consumed"] for j in again) == 0
    for j in again:
        j.close()


def test_the_throttle_policy_holds_joining_back_while_the_learner_is_behind(make_settings):
    s = make_settings(backlog_policy="throttle", backlog_max=3)
    p = Producer(s)
    for i in range(5):  # a backlog the learner has not consumed
        p.publish(s.topics.labeled, LabeledExample(id=f"old{i}", text=f"old {i}", label="pos"))
        p.flush()  # one batch each: tansu reports a topic's end from its last batch
    for i in range(4):
        p.publish(s.topics.texts, TextEvent(id=f"n{i}", text=f"new {i}"))
        p.publish(s.topics.feedback, FeedbackEvent(id=f"n{i}", label="neg"))
    p.flush()
    p.close()
    metrics = JoinerMetrics(CollectorRegistry())
    j = JoinerService(s, metrics)
    assert j.learner_backlog() == 5
    for _ in range(5):
        j.step(0.2)
    assert j.counts["consumed"] == 0 and metrics.join_throttled._value.get() == 1
    learner = Consumer(s, group_id=s.group("learner"))
    learner.assign([s.topics.labeled])
    learner.commit({f"{s.topics.labeled}:0": 4})  # the learner caught up to within backlog_max
    learner.close()
    time.sleep(2.0)  # the next backlog check
    run_until(j, lambda: j.counts["joined"] == 4)
    assert metrics.join_throttled._value.get() == 0
    j.close()


def labeled_ids(settings, wanted, timeout_s=60.0):
    """Every id read from the labeled topic (with repeats), until ``wanted`` are all there."""
    c = Consumer(settings, group_id=None)
    c.assign([settings.topics.labeled])
    ids, deadline = [], time.monotonic() + timeout_s
    while not wanted <= set(ids) and time.monotonic() < deadline:
        ids += [LabeledExample.model_validate_json(r.value).id for r in c.poll(0.5)]
    c.close()
    return ids


def wait_for(predicate, what, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def saved(host):
    """The offsets in the joiner's checkpoint file, if it has one yet."""
    path = host.service.checkpoint_path if host.service is not None else None
    return json.loads(path.read_text(encoding="utf-8"))["offsets"] if path and path.exists() else {}


def test_pairs_whose_sends_failed_while_the_broker_was_paused_are_not_lost(make_settings, broker):
    """The broker paused (SIGSTOP) just after the joiner read feedback: its sends expire (2 s
    delivery timeout here), the step fails and is counted, the joiner goes back to its checkpoint
    and commits nothing past the lost pairs; once the broker is back the same producer sends
    again (it does not wait forever for a new producer id), so the joiner joins the pairs again
    by itself, every pair reaches the labeled topic and its checkpoint moves past them.
    In-process producer: only it takes a delivery timeout."""
    from streaming.runtime import Backoff, ServiceHost

    s = make_settings(join_producer_process=False, join_checkpoint_s=0.5)
    t, pid = s.topics, broker._proc.pid
    before, during = [f"before{i}" for i in range(20)], [f"during{i}" for i in range(30)]
    p = Producer(s)
    for id_ in before:
        p.publish(t.texts, TextEvent(id=id_, text=f"text {id_}"))
        p.publish(t.feedback, FeedbackEvent(id=id_, label="pos"))
    p.flush()
    armed, paused = threading.Event(), threading.Event()

    def build(metrics):
        j = JoinerService(
            s,
            metrics,
            producer_overrides={"request_timeout_ms": 1000, "delivery_timeout_ms": 2000, "max_block_ms": 2000},
        )
        poll = j._consumer.poll

        def poll_then_pause(timeout_s, max_records=None):
            records = poll(timeout_s, max_records)
            if armed.is_set() and not paused.is_set() and any(r.topic == t.feedback for r in records):
                os.kill(pid, signal.SIGSTOP)  # the pairs of these records are sent to a paused broker
                paused.set()
            return records

        j._consumer.poll = poll_then_pause
        return j

    host = ServiceHost(build, "joiner", JoinerMetrics, push_metrics=False, backoff=Backoff(0.2, 1.0))
    try:
        wait_for(lambda: saved(host).get(f"{t.feedback}:0") == 20, "the pairs before checkpointed")
        for id_ in during:
            p.publish(t.texts, TextEvent(id=id_, text=f"text {id_}"))
        p.flush()
        wait_for(lambda: saved(host).get(f"{t.texts}:0") == 50, "the texts checkpointed")
        armed.set()
        for id_ in during:
            p.publish(t.feedback, FeedbackEvent(id=id_, label="neg"))
        p.flush()
        wait_for(lambda: host.errors >= 1, "the failed step")  # the sends expired while paused
        offsets = saved(host)
        time.sleep(1.0)  # a retry or two while the broker is still away
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        assert paused.is_set()
        assert host.metrics.send_failed.labels(t.labeled)._value.get() >= 1
        assert host.metrics.step_errors.labels("joiner")._value.get() >= 1
        assert offsets[f"{t.feedback}:0"] == 20  # nothing checkpointed past the lost pairs
        ids = labeled_ids(s, set(before) | set(during))
        assert set(ids) == set(before) | set(during)  # none lost (some may be there twice)
        wait_for(lambda: saved(host).get(f"{t.feedback}:0") == 50, "the checkpoint past the pairs")
        wait_for(lambda: host.up and host.status()["pending"]["text"] == 0, "the joiner back up")
    finally:
        host.stop()
    p.close()
