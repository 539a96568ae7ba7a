"""A component started while its broker is unreachable comes up by itself once a broker
answers on that address, and processes records (the joiner, hosted as the platform hosts it)."""

from __future__ import annotations

import time
import uuid

import pytest

from services.platform import _joiner
from streaming.broker import EmbeddedBroker, free_port
from streaming.events import FeedbackEvent, LabeledExample, TextEvent
from streaming.joiner import JoinerMetrics
from streaming.kafka import Consumer, Producer, ensure_topics
from streaming.metrics import sample_value
from streaming.runtime import Backoff, ServiceHost
from streaming.settings import StreamSettings

pytestmark = pytest.mark.integration


def wait_for(predicate, what, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


def test_a_joiner_started_before_its_broker_comes_up_by_itself_and_joins(tmp_path):
    port = free_port()
    run = uuid.uuid4().hex[:10]
    s = StreamSettings(
        kafka_bootstrap=f"127.0.0.1:{port}",  # nothing listens here yet
        topic_prefix=f"t{run}",
        consumer_group=f"g{run}",
        state_dir=tmp_path / "state",
    )
    host = ServiceHost(_joiner(s, (0, 1)), "joiner", JoinerMetrics, push_metrics=False, backoff=Backoff(0.2, 1.0))
    broker = None
    try:
        wait_for(lambda: host.status()["errors"] >= 1, lambda: f"no failed construction counted: {host.status()}")
        status = host.status()
        assert status["running"] and not status["built"] and not status["up"]
        assert status["last_error"]
        text = host.exposition()
        assert sample_value(text, "streamcl_component_up", {"component": "joiner"}) == 0
        assert sample_value(text, "streamcl_service_step_errors_total", {"component": "joiner"}) >= 1

        broker = EmbeddedBroker(s.bootstrap, log_file=tmp_path / "broker.log").start()
        ensure_topics(s, s.topics.all())
        producer = Producer(s)
        producer.publish(s.topics.texts, TextEvent(id="a", text="a text sent once the broker is back"))
        producer.publish(s.topics.feedback, FeedbackEvent(id="a", label="pos"))
        producer.flush()
        producer.close()

        wait_for(lambda: host.status().get("joined", 0) == 1, lambda: f"the joiner did not come back: {host.status()}")
        assert host.status()["up"]
        assert sample_value(host.exposition(), "streamcl_component_up", {"component": "joiner"}) == 1

        consumer = Consumer(s, group_id=None)
        consumer.assign([s.topics.labeled])
        records, deadline = [], time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            records += consumer.poll(0.5)
        consumer.close()
        labeled = [LabeledExample.model_validate_json(r.value) for r in records]
        assert [(e.id, e.label) for e in labeled] == [("a", "pos")]
    finally:
        assert host.stop(60)
        if broker is not None:
            broker.stop()
