"""One Serve replica's models and what it does with them, free of HTTP: predict (and log),
take feedback, describe the versions, and pass operator calls to the model controller."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from ray.exceptions import RayError

from learners.quantize import served_copy
from learners.registry import registry_for
from services._forget import FORGET_TIMEOUT_S
from services.metrics import ServeMetrics
from services.serving._errors import AdminRefused, ControllerUnavailable, NotAcknowledged, NotReady, UnknownModel
from services.serving._eventlog import EventLog
from services.serving._runtime import Batcher, ModelFollower
from streaming.events import FeedbackEvent, PredictionEvent, TextEvent
from streaming.runtime import NAMESPACE, MetricsPusher

if TYPE_CHECKING:
    from learners.registry import VersionMeta
    from services.models import ModelSpec
    from services.settings import ServeSettings

ADMIN_TIMEOUT_S = 30.0
WATCH_GRACE_S = 5.0  # a long-poll not answered this long after its timeout has failed


def public(meta: VersionMeta | None) -> dict[str, Any] | None:
    """A version's metadata as the API shows it: without file checksums, offsets always there."""
    if meta is None:
        return None
    data = meta.to_json()
    data.pop("files", None)
    return data | {"offsets": data.get("offsets", {})}


class Served:
    """One model in a replica: its registry, the version it serves, its batcher and metrics."""

    def __init__(
        self, spec: ModelSpec, settings: ServeSettings, replica: str, executor: ThreadPoolExecutor, events: EventLog
    ) -> None:
        self.name = spec.name
        self.default = spec.default
        self.stream = spec.stream
        self.settings = settings
        self.controller_actor = spec.actor("controller")
        self.registry = registry_for(spec.stream, spec.learner)
        self.metrics = ServeMetrics(CollectorRegistry())
        source = spec.source(f"serve-{replica}")
        self.metrics.started.labels(source).set(time.time())
        self.pusher = MetricsPusher(self.metrics, source, labels=spec.metric_labels)
        self.controller_handle: Any = None
        self.follower = ModelFollower(
            self.registry,
            settings.model_poll_s,
            self._swapped,
            keep=settings.replica_warm_versions + 1,
            prepare=partial(served_copy, precision=settings.serve_precision),
            watch=self._wait_serving,
        )
        self.batcher = Batcher(
            lambda: self.follower.current, settings.max_batch_texts, executor, settings.predict_max_wait_s
        )
        self.events = events
        self.log_dropped = self.metrics.events_dropped.labels("prediction_log")
        self.feedback_dropped = self.metrics.events_dropped.labels("feedback")
        for topic in (spec.stream.topics.texts, spec.stream.topics.predictions, spec.stream.topics.feedback):
            self.metrics.send_failed.labels(topic)  # every failed send is counted, from zero

    def _swapped(self, version: int) -> None:
        self.metrics.replicas_ready.set(1)
        self.metrics.replica_version.set(version)

    def summary(self) -> dict[str, Any]:
        """Name, path, labels and the version this replica serves (``GET /v1/models``)."""
        loaded = self.follower.current
        return {
            "name": self.name,
            "default": self.default,  # the default model also answers on /v1/...
            "path": f"/v1/models/{self.name}",
            "topic_prefix": self.stream.topic_prefix,
            "replica_version": loaded.version if loaded else None,
            "labels": loaded.model.labels if loaded else [],
        }

    async def predict(
        self, texts: list[str], ids: list[str] | None, domains: list[str | None] | None
    ) -> dict[str, Any]:
        """Classify ``texts`` with one version and log each text and prediction to Kafka."""
        ids = ids or [uuid.uuid4().hex for _ in texts]
        version, preds = await self.batcher.predict(texts)
        self.metrics.predicted.inc(len(texts))
        if self.settings.log_predictions:
            topics = self.stream.topics
            for id_, text, domain, p in zip(ids, texts, domains or [None] * len(texts), preds):
                self.events.put(topics.texts, TextEvent(id=id_, text=text, domain=domain), self.log_dropped)
                self.events.put(
                    topics.predictions,
                    PredictionEvent(id=id_, label=p.label, scores=p.scores, model_version=version),
                    self.log_dropped,
                )
        return {
            "model": self.name,
            "model_version": version,
            "predictions": [{"id": i, "label": p.label, "scores": p.scores} for i, p in zip(ids, preds)],
        }

    async def feedback(self, events: list[FeedbackEvent]) -> int:
        """Publish feedback and return once Kafka acknowledged all of it (accepted means
        durable); :class:`NotAcknowledged` when it did not within STREAMCL_FEEDBACK_ACK_TIMEOUT_S."""
        try:
            await self.events.publish_acked(self.stream.topics.feedback, events, self.settings.feedback_ack_timeout_s)
        except NotAcknowledged:
            self.feedback_dropped.inc(len(events))  # refused, not lost: the client retries
            raise
        self.metrics.feedback.inc(len(events))
        return len(events)

    async def info(self) -> dict[str, Any]:
        """The serving version, the newest candidate above it, and what this replica serves."""
        versions = await asyncio.to_thread(self.registry.versions)
        serving_v = self.registry.serving()
        serving = next((v for v in versions if v.version == serving_v), None)
        newer = [v for v in versions if v.status == "candidate" and v.version > (serving_v or 0)]
        loaded = self.follower.current
        return {
            "model": self.name,
            "serving": public(serving),
            "candidate": public(newer[-1]) if newer else None,
            "replica_version": loaded.version if loaded else None,
            "labels": loaded.model.labels if loaded else [],
        }

    async def versions(self) -> dict[str, Any]:
        """Every version (pruned ones too), each marked serving or not."""
        versions = await asyncio.to_thread(self.registry.versions)
        serving = self.registry.serving()
        listed = [(v.version, public(v)) for v in versions]
        return {
            "model": self.name,
            "serving": serving,
            "versions": [{**data, "serving": version == serving} for version, data in listed if data],
        }

    async def admin(self, action: str, version: int | None, who: str = "an operator (HTTP)") -> dict[str, Any]:
        """An operator's ``promote``/``rollback``/``pin``/``unpin`` through the model controller,
        audited under ``who`` (the token's name); this replica swaps at once, the others when
        their long-poll returns."""
        result = await self._call_controller(ADMIN_TIMEOUT_S, "admin", action, version, who)
        await asyncio.to_thread(self.follower.sync)
        return result

    async def forget(self, ids: list[str], who: str) -> dict[str, Any]:
        """An operator's erasure of ``ids`` through the model controller (services/_forget.py),
        audited under ``who``; the learner writes a version, so it may take minutes."""
        return await self._call_controller(FORGET_TIMEOUT_S + 30, "forget", ids, who)

    async def _call_controller(self, timeout_s: float, method: str, *args: Any) -> dict[str, Any]:
        """The controller's answer to ``method(*args)``; :class:`ControllerUnavailable` when it
        does not answer in time, :class:`AdminRefused` when it refuses."""
        try:
            controller = self._controller()
            result = await asyncio.wait_for(controller.call.remote(method, *args), timeout=timeout_s)
        except (TimeoutError, ValueError, RayError) as exc:
            self.controller_handle = None
            raise ControllerUnavailable(f"the model controller did not answer: {type(exc).__name__}") from None
        if "error" in result:
            raise AdminRefused(int(result["status"]), result["error"], result["detail"])
        return dict(result)

    def _wait_serving(self, known: int | None, timeout_s: float) -> int | None:
        """The controller's ``wait_serving`` (the follower's long-poll, on its thread); raises
        when the controller cannot answer, and the follower polls the registry meanwhile."""
        import ray

        try:
            ref = self._controller().call.remote("wait_serving", known, timeout_s)
            return ray.get(ref, timeout=timeout_s + WATCH_GRACE_S)  # type: ignore[no-any-return]
        except Exception:
            self.controller_handle = None  # a restarted controller is looked up again
            raise

    def _controller(self) -> Any:
        if self.controller_handle is None:
            import ray

            self.controller_handle = ray.get_actor(self.controller_actor, namespace=NAMESPACE)
        return self.controller_handle


class Replica:
    """Every model of one replica (the default one first) and the settings they answer under."""

    def __init__(self, models: list[ModelSpec], settings: ServeSettings, replica: str) -> None:
        self.settings = settings
        executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.events = EventLog(models[0].stream, block_s=settings.feedback_ack_timeout_s)
        self.models = {m.name: Served(m, settings, replica, executor, self.events) for m in models}
        self.default = self.models[models[0].name]
        self.events.metrics = self.default.metrics  # failed sends of every model, by topic (set before any send)

    def served(self, name: str | None) -> Served:
        """The model called ``name`` (None: the default one); :class:`UnknownModel` if none."""
        if name is None:
            return self.default
        served = self.models.get(name)
        if served is None:
            raise UnknownModel(name, list(self.models))
        return served

    def ready(self) -> dict[str, Any]:
        """The version each model serves; :class:`NotReady` while one has none loaded."""
        loaded = {name: m.follower.current for name, m in self.models.items()}
        missing = [name for name, current in loaded.items() if current is None]
        if missing:
            raise NotReady(f"no model loaded yet for {', '.join(missing)}")
        versions = {name: current.version for name, current in loaded.items() if current is not None}
        return {"status": "ready", "model_version": versions[self.default.name], "models": versions}

    def close(self) -> None:
        """Stop following the registry and send the queued prediction logs (at most
        STREAMCL_EVENT_DRAIN_S; what is left is counted dropped): a replica that stops."""
        for served in self.models.values():
            served.follower.stop()
        self.events.close(self.settings.event_drain_s)
