"""The producer in a child process (the joiner's) against a real broker: a child killed with
messages in flight is replaced, the flush after it raises for what it held (counted), and what
is sent afterwards arrives."""

import os
import signal

import pytest
from prometheus_client import CollectorRegistry

from streaming.events import TextEvent
from streaming.kafka import Consumer, ProcessProducer, SendFailed
from streaming.metrics import MetricGroup

pytestmark = pytest.mark.integration


def read_ids(s, want: int) -> list[str]:
    consumer = Consumer(s, group_id=f"{s.consumer_group}-read")
    consumer.assign([s.topics.texts])
    seen: list[str] = []
    for _ in range(40):
        seen += [r.key.decode() for r in consumer.poll(0.5)]
        if len(seen) >= want:
            break
    consumer.close()
    return seen


def test_a_dead_producer_child_is_replaced_and_its_loss_reported(make_settings):
    s = make_settings()
    metrics = MetricGroup(CollectorRegistry())
    p = ProcessProducer(s, client_id="test-pp", metrics=metrics)
    try:
        p.publish(s.topics.texts, TextEvent(id="a0", text="acknowledged"))
        p.flush()
        first = p._proc
        p.publish(s.topics.texts, TextEvent(id="lost1", text="shipped, never flushed"))
        p.publish(s.topics.texts, TextEvent(id="lost2", text="shipped, never flushed"))
        p.ship()
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        p.publish(s.topics.texts, TextEvent(id="a1", text="after the kill"))
        with pytest.raises(SendFailed) as err:
            p.flush()  # the two shipped to the dead child are reported, never silently dropped
        assert err.value.failed == {s.topics.texts: 2}
        assert metrics.send_failed.labels(s.topics.texts)._value.get() == 2
        assert p._proc is not first and p._proc.is_alive()
        p.flush()  # reported once; the new child acknowledged what came after
    finally:
        p.close()
    ids = read_ids(s, 2)
    assert "a0" in ids and "a1" in ids
