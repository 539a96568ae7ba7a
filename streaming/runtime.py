"""Hosting a service loop in a process (a Ray actor in the platform) and pushing its metrics.

A *service* is an object with ``step()``, ``status()`` and ``close()`` (the joiner, the
learner, the model controller). :class:`ServiceHost` builds it from a factory, runs ``step``
in a thread until stopped, keeps going after an error (logged, counted, retried with
backoff), and pushes the process's metrics to the aggregator actor.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from streaming.drift import Detection
from streaming.errors import StreamclError
from streaming.events import DriftEvent
from streaming.metrics import MetricGroup

log = logging.getLogger(__name__)

AGGREGATOR_NAME = "streamcl-metrics"
NAMESPACE = "streamcl"


class Service(Protocol):
    name: str

    def step(self) -> int: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def backoff(failures: int, first: float = 0.5, most: float = 10.0) -> float:
    """Seconds to wait after ``failures`` failures in a row: ``first``, doubling, at most ``most``.

    >>> [backoff(n, 1.0, 5.0) for n in (1, 2, 3, 4)]
    [1.0, 2.0, 4.0, 5.0]
    """
    return min(most, first * 2 ** max(0, failures - 1))


class Backoff:
    """Exponential delays between retries (:func:`backoff`), counted from the last success."""

    def __init__(self, first: float = 0.5, most: float = 10.0) -> None:
        self.first, self.most = first, most
        self._failures = 0

    def next(self) -> float:
        self._failures += 1
        return backoff(self._failures, self.first, self.most)

    def reset(self) -> None:
        self._failures = 0


class MetricsPusher:
    """Every ``interval_s``, send this process's exposition to the named aggregator actor.

    A push that fails (the aggregator away or restarting) is counted in
    ``streamcl_metrics_push_failures_total{component}``, which reaches the aggregator with the
    next push that works, and logged at most once every ``log_every_s``.
    """

    def __init__(
        self,
        metrics: MetricGroup,
        source: str,
        interval_s: float = 1.0,
        actor: str = AGGREGATOR_NAME,
        labels: dict[str, str] | None = None,
        log_every_s: float = 60.0,
    ):
        self.metrics = metrics
        self.source = source
        self.labels = labels or {}
        self.interval_s = interval_s
        self.actor_name = actor
        self.log_every_s = log_every_s
        self.failures = 0
        self._failed = metrics.push_failures.labels(source)  # at zero
        self._logged_at = -math.inf
        self._actor: Any = None
        self._pending: Any = None  # the previous push's reference, checked by the next push
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metrics-{source}", daemon=True)
        self._thread.start()

    def push(self) -> None:
        """Send the exposition now; raises what made the previous push or this one fail."""
        import ray

        pending, self._pending = self._pending, None
        if pending is not None:
            done, _ = ray.wait([pending], timeout=0)
            if done:
                ray.get(done[0])
        if self._actor is None:
            self._actor = ray.get_actor(self.actor_name, namespace=NAMESPACE)
        self._pending = self._actor.push.remote(self.source, self.metrics.exposition(), self.labels)

    def try_push(self) -> bool:
        """:meth:`push`, a failure counted and logged (rarely) instead of raised."""
        try:
            self.push()
            return True
        except Exception as exc:
            self._actor = None
            self.failures += 1
            self._failed.inc()
            now = time.monotonic()
            if now - self._logged_at >= self.log_every_s:
                self._logged_at = now
                log.warning(
                    "%s could not push its metrics to %s (%d failures so far, logged at most every %.0fs): %s: %s",
                    self.source,
                    self.actor_name,
                    self.failures,
                    self.log_every_s,
                    type(exc).__name__,
                    exc,
                )
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.try_push()

    def stop(self) -> None:
        self._stop.set()
        self.try_push()


def report_detection(d: Detection, metrics: MetricGroup, producer: Any, topic: str, source: str, model: str) -> None:
    """Count a drift detection, log it and publish it as a DriftEvent (best effort: the
    metric and the log line stand when Kafka does not take the event)."""
    metrics.drift_detected.labels(d.detector, d.kind).inc()
    log.warning(
        "%s drift detected by %s after %d observations: score %.3g (threshold %.3g) %s",
        d.kind,
        d.detector,
        d.at,
        d.score,
        d.threshold,
        d.detail,
    )
    event = DriftEvent(
        detector=d.detector,
        kind=d.kind,  # type: ignore[arg-type]
        score=d.score,
        threshold=d.threshold if math.isfinite(d.threshold) else None,
        at=d.at,
        source=source,
        model=model,
        detail=d.detail,
    )
    try:
        producer.publish(topic, event, key=d.detector)
    except Exception as exc:
        log.warning("could not publish the drift event: %s", exc)


class ServiceHost:
    """Builds one service and runs its loop in a thread; exposes ``status``, ``metrics`` and ``stop``.

    ``group`` (the component's :class:`~streaming.metrics.MetricGroup` class) builds the
    metrics on a registry of the process's own; ``factory`` gets them and returns the service.
    The factory runs in the loop's thread, retried with backoff while it raises (a broker down
    at start, a checkpoint that cannot be read), so the host (a Ray actor) always comes up and
    its service comes back by itself. ``streamcl_component_up{component}`` is 1 while the
    service is built and its last step succeeded; ``streamcl_service_step_errors_total``
    counts failed steps and constructions.
    """

    def __init__(
        self,
        factory: Callable[[Any], Service],
        source: str,
        group: Callable[[CollectorRegistry], MetricGroup],
        labels: dict[str, str] | None = None,
        push_metrics: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("kafka").setLevel(logging.WARNING)
        self.metrics = group(CollectorRegistry())  # the metrics of the component it runs, no others
        self.source = source
        self.started_at = time.time()
        self.metrics.started.labels(source).set(self.started_at)
        self._errors = self.metrics.step_errors.labels(source)  # at zero
        self._up = self.metrics.component_up.labels(source)
        self._up.set(0)
        self.up = False
        self.errors = 0
        self.last_error: str | None = None
        self.service: Service | None = None
        self._factory = factory
        self._backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # ``labels`` (the model's name) go on every series when the aggregator merges them
        self._pusher = MetricsPusher(self.metrics, source, labels=labels) if push_metrics else None
        self._thread = threading.Thread(target=self._run, name=source, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            building = self.service is None
            try:
                if building:
                    self._build()
                else:
                    self.service.step()  # type: ignore[union-attr]
            except Exception as exc:
                self._failed("construction" if building else "step", exc)
                continue
            if not self.up:
                log.info("%s is up%s", self.source, " (built)" if building else "")
            self.up = True
            self._up.set(1)
            self._backoff.reset()

    def _build(self) -> None:
        service = self._factory(self.metrics)
        with self._lock:
            if self._stop.is_set():  # stopped while it was being built: nobody else will close it
                service.close()
                return
            self.service = service

    def _failed(self, what: str, exc: Exception) -> None:
        """Count, log (the traceback when the reason changes) and wait before the next try."""
        reason = f"{type(exc).__name__}: {exc}"
        self.errors += 1
        self._errors.inc()
        self.up = False
        self._up.set(0)
        delay = self._backoff.next()
        if reason != self.last_error:
            log.error("%s %s failed (retrying in %.1fs):\n%s", self.source, what, delay, traceback.format_exc())
        else:
            log.error("%s %s failed again (retrying in %.1fs): %s", self.source, what, delay, reason)
        self.last_error = reason
        self._stop.wait(delay)

    def status(self) -> dict[str, Any]:
        """The service's status and the host's; answers while the service is still being built."""
        service = self.service
        return {
            **(service.status() if service is not None else {}),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "built": service is not None,
            "up": self.up,
            "errors": self.errors,
            "last_error": self.last_error,
            "running": self._thread.is_alive(),
        }

    def exposition(self) -> str:
        return self.metrics.exposition()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method of the service between steps is not guaranteed; use for thread-safe calls."""
        service = self.service
        if service is None:
            raise ServiceUnavailable(self.source, self.last_error)
        return getattr(service, method)(*args, **kwargs)

    def stop(self, timeout_s: float = 30.0) -> bool:
        with self._lock:
            self._stop.set()
        self._thread.join(timeout_s)
        try:
            if self.service is not None:
                self.service.close()
        finally:
            self.up = False
            self._up.set(0)
            if self._pusher:
                self._pusher.stop()
        return not self._thread.is_alive()


class ServiceUnavailable(StreamclError):
    """A call reached a host whose service is not built (yet): ``last_error`` says why."""

    def __init__(self, source: str, last_error: str | None) -> None:
        super().__init__(f"{source} is not up yet" + (f" (last error: {last_error})" if last_error else ""))
        self.source = source
        self.last_error = last_error
