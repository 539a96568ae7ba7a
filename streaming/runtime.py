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


class MetricsPusher:
    """Every ``interval_s``, send this process's exposition to the named aggregator actor."""

    def __init__(
        self,
        metrics: MetricGroup,
        source: str,
        interval_s: float = 1.0,
        actor: str = AGGREGATOR_NAME,
        labels: dict[str, str] | None = None,
    ):
        self.metrics = metrics
        self.source = source
        self.labels = labels or {}
        self.interval_s = interval_s
        self.actor_name = actor
        self._actor: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metrics-{source}", daemon=True)
        self._thread.start()

    def push(self) -> None:
        import ray

        if self._actor is None:
            self._actor = ray.get_actor(self.actor_name, namespace=NAMESPACE)
        self._actor.push.remote(self.source, self.metrics.exposition(), self.labels)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.push()
            except Exception:
                self._actor = None

    def stop(self) -> None:
        self._stop.set()
        try:
            self.push()
        except Exception:
            pass


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
    """Runs one service's loop in a thread; exposes ``status``, ``metrics`` and ``stop``.

    ``group`` (the component's :class:`~streaming.metrics.MetricGroup` class) builds the
    metrics on a registry of the process's own; ``factory`` gets them and returns the service.
    """

    def __init__(
        self,
        factory: Callable[[Any], Service],
        source: str,
        group: Callable[[CollectorRegistry], MetricGroup],
        labels: dict[str, str] | None = None,
        push_metrics: bool = True,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("kafka").setLevel(logging.WARNING)
        self.metrics = group(CollectorRegistry())  # the metrics of the component it runs, no others
        self.source = source
        self.started_at = time.time()
        self.metrics.started.labels(source).set(self.started_at)
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        # ``labels`` (the model's name) go on every series when the aggregator merges them
        self._pusher = MetricsPusher(self.metrics, source, labels=labels) if push_metrics else None
        self.service = factory(self.metrics)
        self._thread = threading.Thread(target=self._run, name=source, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.service.step()
                backoff = 0.5
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("%s step failed (retrying in %.1fs):\n%s", self.source, backoff, traceback.format_exc())
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def status(self) -> dict[str, Any]:
        return {
            **self.service.status(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "errors": self.errors,
            "last_error": self.last_error,
            "running": self._thread.is_alive(),
        }

    def exposition(self) -> str:
        return self.metrics.exposition()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method of the service between steps is not guaranteed; use for thread-safe calls."""
        return getattr(self.service, method)(*args, **kwargs)

    def stop(self, timeout_s: float = 30.0) -> bool:
        self._stop.set()
        self._thread.join(timeout_s)
        try:
            self.service.close()
        finally:
            if self._pusher:
                self._pusher.stop()
        return not self._thread.is_alive()
