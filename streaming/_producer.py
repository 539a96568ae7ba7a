"""The producers: :class:`Producer` (acks=all, retries) and :class:`ProcessProducer` (the
same in a child process). A failed send is never silent: it is counted, fails its future, and
makes the next flush raise :class:`SendFailed`; a flush always ends within its bound. Public
through :mod:`streaming.kafka`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from streaming.errors import BrokerError
from streaming.events import Event
from streaming.settings import StreamSettings

if TYPE_CHECKING:
    from streaming.metrics import MetricGroup

log = logging.getLogger(__name__)


class SendFailed(BrokerError):
    """Sends the broker never acknowledged; ``failed`` counts them by topic."""

    def __init__(self, failed: Mapping[str, int], first: str, bootstrap: str | None = None) -> None:
        super().__init__(f"{sum(failed.values())} send(s) failed ({dict(failed)}); first: {first}", bootstrap)
        self.failed = dict(failed)


class Producer:
    """Producer (acks=all, retried until ``delivery_timeout_ms``) of events keyed by id.

    A failed send is never silent: it is counted in ``metrics.send_failed{topic}`` (with
    ``metrics``), the future :meth:`send` returns fails, and the next :meth:`flush` raises
    :class:`SendFailed` for every failure since the previous one.

    Not idempotent, on purpose: kafka-python's idempotent producer, once a batch expired,
    stops sending until the broker hands it a new producer id, which tansu never does after
    a pause, so every later flush would hang. Without it a retry may write a record twice
    (and, rarely, out of order); every consumer downstream is at-least-once already."""

    def __init__(
        self,
        settings: StreamSettings,
        client_id: str = "streamcl",
        metrics: MetricGroup | None = None,
        **overrides: Any,
    ) -> None:
        config: dict[str, Any] = {
            **settings.kafka_config(),
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,
            "linger_ms": 20,
            "batch_size": 512 * 1024,
            "max_request_size": 8 * 1024 * 1024,
            "retries": 2**31 - 1,
        }
        config.update(overrides)
        self._bootstrap = settings.bootstrap
        self._metrics = metrics
        self._lock = threading.Lock()
        self._failed: dict[str, int] = {}  # since the last flush
        self._first_error = ""
        # a flush without a timeout still ends: every batch is acknowledged or expired by then
        self.flush_bound_s = config.get("delivery_timeout_ms", 120_000) / 1000 + 5.0
        try:
            self._producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise BrokerError(f"no Kafka broker at {settings.bootstrap}", settings.bootstrap) from exc

    def send(self, topic: str, value: bytes, key: str | bytes | None = None) -> Any:
        """Queue one message; returns kafka-python's future (it fails if the broker never
        acknowledges the message). Raises :class:`BrokerError` when it cannot even be queued."""
        if isinstance(key, str):
            key = key.encode("utf-8")
        try:
            future = self._producer.send(topic, value=value, key=key)
        except KafkaError as exc:  # no metadata or no buffer space within max_block_ms: the caller hears it now
            self._count(topic)
            raise BrokerError(f"cannot queue a message for {topic}: {exc!r}", self._bootstrap) from exc
        return future.add_errback(self._on_failure, topic)

    def publish(self, topic: str, event: Event, key: str | None = None) -> Any:
        """Queue an event, keyed by its ``id`` unless a key is given."""
        return self.send(topic, event.to_bytes(), key if key is not None else getattr(event, "id", None))

    def _count(self, topic: str, n: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.send_failed.labels(topic).inc(n)

    def _on_failure(self, topic: str, exc: BaseException) -> None:
        self._count(topic)
        with self._lock:
            self._failed[topic] = self._failed.get(topic, 0) + 1
            self._first_error = self._first_error or repr(exc)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued message is acknowledged or failed; raise :class:`SendFailed`
        if any failed since the last flush, :class:`BrokerError` if ``timeout_s`` (by default
        :attr:`flush_bound_s`) passed first."""
        timeout_s = self.flush_bound_s if timeout_s is None else timeout_s
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise BrokerError(f"flush did not finish in {timeout_s}s: {exc!r}", self._bootstrap) from exc
        with self._lock:
            failed, first, self._failed, self._first_error = self._failed, self._first_error, {}, ""
        if failed:
            raise SendFailed(failed, first, self._bootstrap)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to ``timeout_s``, then stop; what is still unsent then is dropped (its
        sends fail), since kafka-python's close would raise and leave its sender thread running."""
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaTimeoutError:
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(timeout_s)


def _producer_process(conn: Any, settings: StreamSettings, client_id: str) -> None:
    """Child side of :class:`ProcessProducer`: send what arrives; answer each numbered flush
    with its number, so that a late answer is never taken for a later flush's."""
    try:
        producer = Producer(settings, client_id=client_id)
    except Exception as exc:
        conn.send(("error", 0, f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", 0, None))
    unqueued: dict[str, int] = {}
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except EOFError:  # the parent is gone
                return
            if kind == "send":
                for topic, key, value in payload:
                    try:
                        producer.send(topic, value, key)
                    except BrokerError:
                        unqueued[topic] = unqueued.get(topic, 0) + 1
            elif kind == "flush":
                try:
                    producer.flush()
                    conn.send(("failed", payload, (unqueued, "not queued")) if unqueued else ("ok", payload, None))
                except SendFailed as exc:
                    failed = {t: n + unqueued.get(t, 0) for t, n in exc.failed.items()}
                    conn.send(("failed", payload, (failed, str(exc))))
                except BrokerError as exc:
                    conn.send(("error", payload, str(exc)))
                unqueued = {}
            elif kind == "close":
                return
    finally:
        producer.close()


class ProcessProducer:
    """A :class:`Producer` in a child process, so that building and sending records uses a
    core of its own while this process consumes. Messages are shipped in batches (one pipe
    write per :meth:`ship`, or every ``batch`` messages); :meth:`flush` returns once the child
    has flushed everything shipped, and raises if any send failed (:class:`SendFailed`, each
    failure also counted in ``metrics.send_failed{topic}``). A child that died is replaced on
    the next call, and the flush after it raises :class:`SendFailed` (what it held is lost)."""

    def __init__(
        self,
        settings: StreamSettings,
        client_id: str = "streamcl",
        batch: int = 2000,
        metrics: MetricGroup | None = None,
    ) -> None:
        self._settings, self._client_id = settings, client_id
        self._bootstrap = settings.bootstrap
        self._batch = batch
        self._buffer: list[tuple[str, bytes | None, bytes]] = []
        self._metrics = metrics
        self._seq = 0  # the number of the last flush asked for
        self._lost: dict[str, int] = {}  # shipped to a child that died before its flush answered
        self._shipped: dict[str, int] = {}  # shipped since the last flush, by topic
        self._start_child()

    def _start_child(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_producer_process,
            args=(child, self._settings, self._client_id),
            name=f"{self._client_id}-producer",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._expect(0, "start", 60.0)

    def _replace_dead_child(self) -> None:
        """A child that died takes what it was shipped since the last flush with it."""
        if self._proc.is_alive():
            return
        log.error("the producer process died (exit code %s): starting a new one", self._proc.exitcode)
        for topic, n in self._shipped.items():
            self._lost[topic] = self._lost.get(topic, 0) + n
        self._shipped = {}
        self._conn.close()
        self._start_child()

    def _expect(self, seq: int, what: str, timeout_s: float) -> None:
        """Wait for the answer numbered ``seq`` (earlier answers, late ones, are dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                raise BrokerError(f"producer process did not {what} in {timeout_s}s", self._bootstrap)
            try:
                status, number, detail = self._conn.recv()
            except EOFError:
                raise BrokerError(f"producer process died during {what}", self._bootstrap) from None
            if number == seq:
                break
        if status == "failed":
            failed, first = detail
            self._count(failed)
            raise SendFailed(failed, f"producer process {what} failed: {first}", self._bootstrap)
        if status != "ok":
            raise BrokerError(f"producer process {what} failed: {detail}", self._bootstrap)

    def _count(self, failed: Mapping[str, int]) -> None:
        if self._metrics is not None:
            for topic, n in failed.items():
                self._metrics.send_failed.labels(topic).inc(n)

    def send(self, topic: str, value: bytes, key: str | bytes | None = None) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._buffer.append((topic, key, value))
        if len(self._buffer) >= self._batch:
            self.ship()

    def publish(self, topic: str, event: Event, key: str | None = None) -> None:
        self.send(topic, event.to_bytes(), key if key is not None else getattr(event, "id", None))

    def ship(self) -> None:
        """Hand the buffered messages to the child (blocks while the pipe is full: backpressure)."""
        if not self._buffer:
            return
        self._replace_dead_child()
        batch, self._buffer = self._buffer, []
        for topic, _, _ in batch:
            self._shipped[topic] = self._shipped.get(topic, 0) + 1
        try:
            self._conn.send(("send", batch))
        except OSError:  # the child died while we wrote: its messages go with it
            self._replace_dead_child()

    def flush(self, timeout_s: float | None = None) -> None:
        self.ship()
        self._replace_dead_child()
        if self._lost:
            lost, self._lost = self._lost, {}
            self._count(lost)
            raise SendFailed(lost, "the producer process died before they were acknowledged", self._bootstrap)
        self._seq += 1
        try:
            self._conn.send(("flush", self._seq))
        except OSError:  # the child died: the next call replaces it and reports what it held
            raise BrokerError("producer process died before the flush", self._bootstrap) from None
        self._expect(self._seq, "flush", timeout_s or 300.0)
        self._shipped = {}  # acknowledged

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            if self._proc.is_alive():
                self.flush(timeout_s)
                self._conn.send(("close", None))
        finally:
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
            self._conn.close()
