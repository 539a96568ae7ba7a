"""The model controller: decides what the endpoint serves.

It reads ModelEvents from ``streamcl.models`` and, for each candidate newer than the serving
version, asks the gate; a passing candidate becomes the serving version in the registry (the
pointer every Serve replica follows) and a ``promoted`` ModelEvent is published. At start it
reconciles with the registry, so a candidate whose event was missed is still decided.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from learners.registry import Registry
from streaming.errors import InvalidEvent, RegistryError
from streaming.events import ModelEvent, decode
from streaming.kafka import Consumer, Producer
from streaming.metrics import Metrics
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)


class Gate(Protocol):
    """Decides whether a candidate may replace the serving version."""

    def decide(self, candidate: dict[str, Any], serving: dict[str, Any] | None) -> tuple[bool, str]: ...


class PromoteNewer:
    """Promotes every candidate newer than the serving version (the promotion gate that
    scores candidates is its own extension)."""

    def decide(self, candidate: dict[str, Any], serving: dict[str, Any] | None) -> tuple[bool, str]:
        if serving is not None and candidate["version"] <= serving["version"]:
            return False, f"not newer than serving version {serving['version']}"
        return True, "newer than the serving version"


class ModelController:
    name = "controller"

    def __init__(
        self,
        stream: StreamSettings,
        registry: Registry,
        metrics: Metrics,
        model: str = "default",
        gate: Gate | None = None,
    ) -> None:
        self.stream = stream
        self.registry = registry
        self.metrics = metrics
        self.model = model
        self.gate = gate or PromoteNewer()
        self.decided = 0
        self._producer = Producer(stream, client_id="streamcl-controller")
        self._consumer = Consumer(
            stream, group_id=f"{stream.consumer_group}.controller", client_id="streamcl-controller"
        )
        self._consumer.assign([stream.topics.models])
        self.reconcile()

    def reconcile(self) -> None:
        """Decide every candidate the registry holds that is newer than the serving version."""
        serving = self.registry.serving()
        for meta in self.registry.versions():
            if meta.get("status") == "candidate" and (serving is None or meta["version"] > serving):
                self.consider(meta["version"])
        self._publish_gauges()

    def step(self) -> int:
        records = self._consumer.poll(0.5, max_records=100)
        for rec in records:
            try:
                event = decode(ModelEvent, rec.value, self.stream.max_text_chars)
            except InvalidEvent as exc:
                self._producer.publish(self.stream.topics.dlq, rec.dead_letter(exc.reason, exc.detail))
                self.metrics.dlq.labels(exc.reason).inc()
                continue
            if event.model == self.model and event.status == "candidate":
                self.metrics.model_version.labels("candidate").set(event.version)
                self.consider(event.version)
        if records:
            self._consumer.commit(self._consumer.positions())
        return len(records)

    def consider(self, version: int) -> None:
        try:
            candidate = self.registry.meta(version)
        except RegistryError as exc:
            log.warning("candidate %d cannot be read: %s", version, exc)
            return
        if candidate.get("status") != "candidate":
            return  # already decided
        current = self.registry.serving()
        serving = self.registry.meta(current) if current is not None else None
        ok, reason = self.gate.decide(candidate, serving)
        if ok:
            self.promote(version, reason)
        else:
            self.registry.update(version, status="rejected", reason=reason)
            self.metrics.rejections.inc()
            self._announce(version, "rejected", {"reason": reason})
            log.info("version %d rejected: %s", version, reason)
        self.decided += 1

    def promote(self, version: int, reason: str) -> None:
        self.registry.local_path(version)  # refuses missing or corrupt files
        self.registry.update(version, status="promoted", reason=reason)
        self.registry.set_serving(version)
        self.metrics.promotions.inc()
        self._announce(version, "promoted", {"reason": reason})
        self._publish_gauges()
        log.info("version %d promoted: %s", version, reason)

    def _announce(self, version: int, status: str, extra: dict[str, Any]) -> None:
        meta = self.registry.meta(version)
        event = ModelEvent(
            model=self.model,
            version=version,
            status=status,  # type: ignore[arg-type]
            parent=meta.get("parent"),
            metrics={**meta.get("metrics", {}), **extra},
            uri=meta["uri"],
        )
        self._producer.publish(self.stream.topics.models, event, key=self.model)
        self._producer.flush()

    def _publish_gauges(self) -> None:
        serving = self.registry.serving()
        if serving is not None:
            self.metrics.model_version.labels("serving").set(serving)

    def status(self) -> dict[str, Any]:
        return {"serving": self.registry.serving(), "decided": self.decided}

    def close(self) -> None:
        try:
            self._consumer.close()
        finally:
            self._producer.close()
