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
        self.config = config
        self.futures: list[Future] = []
        self.refuse = False
        self.stuck = False  # a sender that never finishes: flush and close time out
        self.flush_timeouts: list[float | None] = []
        self._sender = FakeSender()

    def send(self, topic: str, value: bytes, key: bytes | None) -> Future:
        if self.refuse:
            raise KafkaTimeoutError("no buffer space within max_block_ms")
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout: float | None = None) -> None:
        self.flush_timeouts.append(timeout)
        if self.stuck:
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)


class FakeSender:
    """kafka-python's sender thread, as far as a forced close goes."""

    def __init__(self) -> None:
        self.forced = False

    def force_close(self) -> None:
        self.forced = True

    def join(self, timeout: float | None = None) -> None:
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


def test_the_producer_is_not_idempotent_so_an_expired_batch_cannot_wedge_it(monkeypatch):
    """kafka-python's idempotent producer stops sending after an expired batch until a new
    producer id comes, which tansu never gives after a pause: acks=all and retries, no idempotence."""
    monkeypatch.setattr(producers, "KafkaProducer", FakeKafkaProducer)
    config = Producer(StreamSettings())._producer.config
    assert config["enable_idempotence"] is False and config["acks"] == "all" and config["retries"] > 0


def test_a_flush_always_ends_within_its_bound_and_close_stops_a_stuck_sender(monkeypatch):
    monkeypatch.setattr(producers, "KafkaProducer", FakeKafkaProducer)
    metrics = MetricGroup(CollectorRegistry())
    p = Producer(StreamSettings(), metrics=metrics, delivery_timeout_ms=2000)
    fake = p._producer
    p.flush()
    assert fake.flush_timeouts == [p.flush_bound_s] and p.flush_bound_s == 7.0  # never unbounded
    fake.stuck = True
    p.send("a", b"1")
    with pytest.raises(BrokerError, match=r"did not finish in 1\.5s"):
        p.flush(1.5)
    p.close(0.1)  # kafka-python's close raises here and leaves its sender running: stopped
    assert fake._sender.forced
