"""A replica's way to Kafka: feedback awaited until the broker acknowledges it, prediction logs
published off the response path and dropped (counted) under overload.

Feedback is the platform's input, so ``POST /v1/feedback`` answers 202 only once every
FeedbackEvent of the request is acknowledged (acks=all), and fails with
:class:`NotAcknowledged` (503) when that does not happen within a bound: nothing accepted sits
in a replica's memory. While the broker is not acknowledging (the last try failed), requests
are refused at once and one probe a second waits for the broker, so that an outage does not
fill the replica with requests that each wait the whole bound (and make predictions wait behind
them). Prediction logs are best-effort: a bounded queue, one publishing thread,
drained for a bounded time when the replica stops.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

from services.serving._errors import NotAcknowledged
from streaming.errors import StreamclError
from streaming.kafka import Producer

if TYPE_CHECKING:
    from streaming.events import Event
    from streaming.metrics import MetricGroup
    from streaming.settings import StreamSettings

log = logging.getLogger("streamcl.serve")

Queued = tuple[str, "Event", Any]  # topic, event, the counter of its kind's dropped events
#: While the broker is not acknowledging, one feedback request a second waits for it (a probe).
PROBE_EVERY_S = 1.0


class EventLog:
    """Publishes a replica's events with one producer (acks=all, retried; not idempotent).

    :meth:`publish_acked` (feedback) sends at once and returns when the broker acknowledged
    every event, within ``timeout_s`` whatever the broker does. :meth:`put` (prediction logs)
    queues; a full queue, a send that fails and a queue not drained at :meth:`close` lose the
    event, each counted in the ``dropped`` counter that came with it. Every failed send is also
    counted in ``metrics.send_failed{topic}``."""

    def __init__(
        self, stream: StreamSettings, maxsize: int = 50_000, metrics: MetricGroup | None = None, block_s: float = 5.0
    ) -> None:
        self.stream = stream
        self.maxsize = maxsize
        self.metrics = metrics
        self.block_s = block_s  # longest a send may wait for metadata or buffer space
        self._queue: queue.Queue[Queued] = queue.Queue(maxsize)
        self._producer: Producer | None = None
        self._producer_lock = threading.Lock()
        self._closing = threading.Event()
        self._failing_since: float | None = None  # the broker stopped acknowledging (monotonic)
        self._probe_at = 0.0  # when the next request may wait for the broker while it is failing
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    def producer(self) -> Producer:
        """The replica's producer, connected on first use (a broker down at start is retried by
        the next call). A short linger: a feedback request waits for its batch."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = Producer(
                    self.stream,
                    client_id="streamcl-serve",
                    metrics=self.metrics,
                    max_block_ms=int(self.block_s * 1000),
                    linger_ms=5,
                )
            return self._producer

    async def publish_acked(self, topic: str, events: Sequence[Event], timeout_s: float) -> None:
        """Send ``events`` to ``topic`` and return once the broker acknowledged all of them;
        :class:`NotAcknowledged` when one failed or ``timeout_s`` passed first."""
        loop = asyncio.get_running_loop()
        self._refuse_while_failing()

        async def sent_and_acked() -> None:
            futures = await asyncio.to_thread(self._send_all, topic, events)
            await asyncio.gather(*(_acked(loop, f) for f in futures))

        try:
            await asyncio.wait_for(sent_and_acked(), timeout_s)
        except TimeoutError:
            self._failed()
            raise NotAcknowledged(f"Kafka did not acknowledge the events within {timeout_s:g}s; retry") from None
        except (StreamclError, KafkaError) as exc:
            self._failed()
            raise NotAcknowledged(f"Kafka refused the events ({type(exc).__name__}); retry") from None
        if self._failing_since is not None:
            log.warning("Kafka acknowledges feedback again after %.0fs", time.monotonic() - self._failing_since)
            self._failing_since = None

    def _refuse_while_failing(self) -> None:
        """While the broker is not acknowledging, refuse at once, except one probe a second."""
        if self._failing_since is None:
            return
        now = time.monotonic()
        if now < self._probe_at:
            raise NotAcknowledged(
                f"Kafka has not acknowledged events for {now - self._failing_since:.0f}s; retry", retry_after=2.0
            )
        self._probe_at = now + PROBE_EVERY_S

    def _failed(self) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.error("Kafka does not acknowledge feedback: refusing it (503) until it does")
        self._probe_at = max(self._probe_at, now + PROBE_EVERY_S)

    def _send_all(self, topic: str, events: Sequence[Event]) -> list[Any]:
        producer = self.producer()
        return [producer.publish(topic, ev) for ev in events]

    def room(self, n: int) -> bool:
        """Whether ``n`` more events fit in the queue now."""
        return self._queue.qsize() + n <= self.maxsize

    def put(self, topic: str, event: Event, dropped: Any = None) -> bool:
        """Queue ``event`` for ``topic``; False (and ``dropped`` counted) when the queue is full
        or the log is closing."""
        if not self._closing.is_set():
            try:
                self._queue.put_nowait((topic, event, dropped))
                return True
            except queue.Full:
                pass
        if dropped is not None:
            dropped.inc()
        return False

    def _run(self) -> None:
        while True:
            try:
                topic, event, dropped = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            try:
                future = self.producer().publish(topic, event)
            except Exception as exc:
                _lost(dropped, f"publishing to {topic} failed, event dropped: {exc}")
            else:
                future.add_errback(lambda exc, d=dropped, t=topic: _lost(d, f"send to {t} failed: {exc!r}"))

    def close(self, timeout_s: float) -> int:
        """Stop taking events, publish what is queued and wait for the broker's acks, for at
        most ``timeout_s`` in all; returns how many queued events were left (counted dropped)."""
        deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._thread.join(timeout_s)
        left = 0
        while True:
            try:
                _, _, dropped = self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
            if dropped is not None:
                dropped.inc()
        if left:
            log.warning("the replica stops: %d queued prediction logs not sent in %.0fs, dropped", left, timeout_s)
        producer = self._producer  # kept: a send still under way in the thread fails (counted), never reconnects
        if producer is not None:
            try:
                producer.flush(max(0.1, deadline - time.monotonic()))
            except StreamclError as exc:
                log.warning("the replica stops: %s", exc)
            producer.close(0)
        return left


def _lost(dropped: Any, why: str) -> None:
    if dropped is not None:
        dropped.inc()
    log.warning(why)


def _acked(loop: asyncio.AbstractEventLoop, future: Any) -> asyncio.Future[None]:
    """An asyncio future settled when kafka-python's ``future`` is (from its sender thread)."""
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():  # the request timed out and was answered already
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    future.add_callback(lambda _: loop.call_soon_threadsafe(settle, None))
    future.add_errback(lambda exc: loop.call_soon_threadsafe(settle, exc))
    return done
