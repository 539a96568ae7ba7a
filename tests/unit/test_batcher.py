"""The replica runtime: dynamic batching (concurrent requests share forward passes, a lone one
waits on nobody, a batch never mixes versions), the model follower's retries with backoff, and
the event log (feedback waits for Kafka's acknowledgement, prediction logs drain on close)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
from kafka.future import Future

from learners.model import Prediction
from services.serving import Batcher, EventLog, Loaded, ModelFollower, NotAcknowledged, NotReady, status_of
from streaming.errors import BrokerError, RegistryError
from streaming.events import FeedbackEvent
from streaming.settings import StreamSettings


class Slow:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def predict(self, texts):
        self.calls.append(len(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(0.05)
        return [Prediction(f"{self.name}:{t}", {}) for t in texts]


def test_concurrent_requests_are_batched_and_keep_their_order():
    model = Slow("m")
    batcher = Batcher(lambda: Loaded(7, model), max_texts=64)

    async def run():
        return await asyncio.gather(*(batcher.predict([f"t{i}", f"u{i}"]) for i in range(20)))

    results = asyncio.run(run())
    for i, (version, preds) in enumerate(results):
        assert version == 7 and [p.label for p in preds] == [f"m:t{i}", f"m:u{i}"]
    assert len(model.calls) <= 3 and sum(model.calls) == 40  # not one forward per request
    assert model.threads == {"inference_0"}  # one inference thread


def test_a_batch_is_bounded_and_a_swap_applies_to_the_next_batch():
    models = {"current": Loaded(1, Slow("old"))}
    batcher = Batcher(lambda: models["current"], max_texts=10)

    async def run():
        first = asyncio.ensure_future(batcher.predict(["a"]))
        await asyncio.sleep(0.01)  # the first forward is running
        models["current"] = Loaded(2, Slow("new"))
        rest = await asyncio.gather(*(batcher.predict([f"x{i}"] * 4) for i in range(5)))
        return await first, rest

    first, rest = asyncio.run(run())
    assert first[0] == 1 and first[1][0].label == "old:a"
    assert {v for v, _ in rest} == {2}
    assert all(n <= 10 for n in models["current"].model.calls)


def test_no_model_is_a_503():
    batcher = Batcher(lambda: None, max_texts=10)
    with pytest.raises(NotReady) as err:  # a domain error: the HTTP layer answers it with 503
        asyncio.run(batcher.predict(["a"]))
    assert status_of(err.value) == 503


class FlakyRegistry:
    """A registry whose version 2 fails to load ``failures`` times (a storage blip), then loads."""

    def __init__(self, failures: int) -> None:
        self.pointer = 1
        self.failures = failures
        self.loads: list[int] = []

    def serving(self) -> int:
        return self.pointer

    def serving_state(self) -> SimpleNamespace:
        return SimpleNamespace(history=[])

    def versions(self) -> list:
        return []

    def load_model(self, version: int) -> str:
        self.loads.append(version)
        if version == 2 and self.failures > 0:
            self.failures -= 1
            raise RegistryError("storage blip", version)
        return f"model-{version}"


def test_a_version_that_failed_to_load_is_tried_again_with_backoff(monkeypatch):
    import services.serving._runtime as runtime

    monkeypatch.setattr(runtime, "backoff", lambda n: 0.05 * 2 ** (n - 1))
    registry = FlakyRegistry(failures=3)
    follower = ModelFollower(registry, poll_s=0.01)  # type: ignore[arg-type]
    try:
        assert follower.current == Loaded(1, "model-1")  # type: ignore[arg-type]
        registry.pointer = 2
        follower.sync()
        assert follower.current.version == 1 and "storage blip" in follower.failed[2]
        assert follower.waiting(2)  # not tried again at once
        follower.sync()
        assert registry.loads.count(2) == 1
        deadline = time.monotonic() + 10
        while follower.current.version != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.current == Loaded(2, "model-2")  # type: ignore[arg-type]
        assert registry.loads.count(2) == 4 and not follower.failed and not follower.waiting(2)
    finally:
        follower.stop()


def test_backoff_doubles_up_to_a_ceiling():
    from services.serving import backoff

    assert [backoff(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0] and backoff(50) == 60.0


class FakeProducer:
    """Futures settled by the test (``ack``: at once; None: never)."""

    def __init__(self, ack: bool | None = True, delay_s: float = 0.0) -> None:
        self.ack = ack
        self.delay_s = delay_s
        self.sent: list[tuple[str, str]] = []
        self.flushed = False

    def publish(self, topic: str, event):
        time.sleep(self.delay_s)
        self.sent.append((topic, event.id))
        future = Future()
        if self.ack is True:
            future.success(None)
        elif self.ack is False:
            future.failure(BrokerError("refused"))
        return future

    def flush(self, timeout_s=None):
        self.flushed = True

    def close(self, timeout_s=None):
        pass


def _log(producer) -> EventLog:
    log = EventLog(StreamSettings(kafka_bootstrap="127.0.0.1:1"), maxsize=10)
    log._producer = producer
    return log


@pytest.mark.parametrize("ack", [False, None])
def test_feedback_not_acknowledged_in_time_is_refused(ack):
    log = _log(FakeProducer(ack=ack))
    events = [FeedbackEvent(id=f"i{i}", label="a") for i in range(3)]
    with pytest.raises(NotAcknowledged) as err:
        asyncio.run(log.publish_acked("fb", events, timeout_s=0.2))
    assert status_of(err.value) == 503 and err.value.retry_after > 0
    asyncio.run(_log(FakeProducer(ack=True)).publish_acked("fb", events, timeout_s=0.2))  # acked: returns


def test_a_broker_that_cannot_be_reached_is_a_refusal_not_an_error():
    log = EventLog(StreamSettings(kafka_bootstrap="127.0.0.1:1"), block_s=0.2)
    with pytest.raises(NotAcknowledged):
        asyncio.run(log.publish_acked("fb", [FeedbackEvent(id="a", label="b")], timeout_s=3))


class Dropped:
    def __init__(self) -> None:
        self.n = 0

    def inc(self, n: int = 1) -> None:
        self.n += n


def test_close_drains_the_queue_and_counts_what_is_left():
    producer, dropped = FakeProducer(), Dropped()
    log = _log(producer)
    for i in range(5):
        assert log.put("p", FeedbackEvent(id=f"i{i}", label="a"), dropped)
    assert log.close(timeout_s=5) == 0
    assert [i for _, i in producer.sent] == [f"i{i}" for i in range(5)] and producer.flushed
    assert not log.put("p", FeedbackEvent(id="late", label="a"), dropped) and dropped.n == 1

    slow, dropped = FakeProducer(delay_s=0.2), Dropped()
    log = _log(slow)
    for i in range(10):
        log.put("p", FeedbackEvent(id=f"i{i}", label="a"), dropped)
    left = log.close(timeout_s=0.1)
    assert left > 0 and dropped.n == left and len(slow.sent) + left <= 10


def test_while_the_broker_does_not_acknowledge_feedback_is_refused_at_once_but_probed():
    """An outage must not fill the replica with requests that each wait the whole bound."""
    log = _log(FakeProducer(ack=None))
    events = [FeedbackEvent(id="a", label="b")]
    with pytest.raises(NotAcknowledged):
        asyncio.run(log.publish_acked("fb", events, timeout_s=0.3))  # waited, then refused
    with pytest.raises(NotAcknowledged, match="has not acknowledged"):
        asyncio.run(log.publish_acked("fb", events, timeout_s=0.3))
    assert len(log._producer.sent) == 1  # refused without sending (nor waiting)
    log._producer = FakeProducer(ack=True)  # the broker is back
    log._probe_at = 0.0  # the next probe is due
    asyncio.run(log.publish_acked("fb", events, timeout_s=0.3))  # the probe goes through
    asyncio.run(log.publish_acked("fb", events, timeout_s=0.3))  # and so does everything after it
    assert log._failing_since is None


def test_requests_that_waited_too_long_are_shed_and_gone_clients_skipped():
    """A replica that falls behind answers 503 overloaded instead of computing what nobody reads."""
    from services.serving import Overloaded

    model = Slow("m")
    batcher = Batcher(lambda: Loaded(1, model), max_texts=2, max_wait_s=0.08)

    async def run():
        first = asyncio.ensure_future(batcher.predict(["a", "b"]))  # runs at once (50 ms)
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.predict(["gone", "gone"]))
        queued = [asyncio.ensure_future(batcher.predict([f"q{i}", f"q{i}"])) for i in range(4)]
        await asyncio.sleep(0.001)
        gone.cancel()  # its client disconnected while it waited
        return await asyncio.gather(first, *queued, return_exceptions=True)

    first, *queued = asyncio.run(run())
    assert first[1][0].label == "m:a"
    answered = [r for r in queued if not isinstance(r, BaseException)]
    shed = [r for r in queued if isinstance(r, Overloaded)]
    assert shed and len(answered) + len(shed) == 4  # each one answered or shed (the last waits >= 150 ms)
    assert status_of(shed[0]) == 503 and shed[0].retry_after > 0
    assert batcher.shed == len(shed)
    assert "gone" not in {p.label.split(":")[1] for r in answered for p in r[1]}  # never computed
    assert sum(model.calls) == 2 + 2 * len(answered)
