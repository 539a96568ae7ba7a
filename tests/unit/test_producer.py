"""The producer never fails silently: a send the broker does not acknowledge is counted in
``streamcl_events_send_failed_total{topic}``, fails its future and makes the next flush raise;
a message that cannot even be queued raises at once. Over a fake kafka-python producer."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future
from prometheus_client import CollectorRegistry

import streaming._producer as producers
from streaming.errors import BrokerError
from streaming.kafka import Producer, SendFailed
from streaming.metrics import MetricGroup
from streaming.settings import StreamSettings


class FakeKafkaProducer:
    """Futures the test settles; ``refuse`` makes send raise as a full buffer would."""

    def __init__(self, **config: Any) -> None:
        self.futures: list[Future] = []
        self.refuse = False

    def send(self, topic: str, value: bytes, key: bytes | None) -> Future:
        if self.refuse:
            raise KafkaTimeoutError("no buffer space within max_block_ms")
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_failed_sends_are_counted_and_raised_on_the_next_flush(monkeypatch):
    monkeypatch.setattr(producers, "KafkaProducer", FakeKafkaProducer)
    metrics = MetricGroup(CollectorRegistry())
    p = Producer(StreamSettings(), metrics=metrics)
    fake = p._producer
    ok, bad, bad2 = p.send("a", b"1"), p.send("b", b"2"), p.send("b", b"3")
    ok.success(None)
    bad.failure(NotLeaderForPartitionError())
    bad2.failure(KafkaTimeoutError())
    with pytest.raises(SendFailed) as err:
        p.flush()
    assert err.value.failed == {"b": 2} and "NotLeaderForPartition" in str(err.value)
    assert metrics.send_failed.labels("b")._value.get() == 2 and metrics.send_failed.labels("a")._value.get() == 0
    p.flush()  # reported once: the next flush covers only what came after
    fake.refuse = True
    with pytest.raises(BrokerError):
        p.send("a", b"4")
    assert metrics.send_failed.labels("a")._value.get() == 1
    p.flush()  # a send that raised was reported to its caller then, not again
