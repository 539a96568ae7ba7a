"""The HTTP API on Ray Serve: predict, feedback, model info, health.

Each replica follows the registry's serving pointer: a new version is loaded in a background
thread and then swapped in by switching one reference, so requests never wait on a load and
one response never mixes two versions. Predictions are logged to Kafka from a queue drained
by its own thread, off the response path.
"""

import asyncio
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from ray import serve
from ray.exceptions import RayError

from learners.model import Prediction, TextClassifier, set_threads
from learners.registry import Registry
from learners.service import registry_for
from learners.settings import LearnerSettings
from services.models import ModelSpec, model_specs
from services.settings import ServeSettings
from streaming.errors import InvalidEvent, RegistryError
from streaming.events import FeedbackEvent, PredictionEvent, TextEvent, validate
from streaming.metrics import Metrics
from streaming.runtime import NAMESPACE, MetricsPusher
from streaming.settings import StreamSettings

log = logging.getLogger("streamcl.serve")

app = FastAPI(title="streamcl", version="1", description="Continual-learning text classifier endpoint")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)


@app.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return JSONResponse({"error": "internal_error", "detail": type(exc).__name__}, status_code=500)


@dataclass(frozen=True, slots=True)
class Loaded:
    version: int
    model: TextClassifier


PREFETCH_S = 2.0  # how often a replica looks for versions to keep warm


class ModelFollower:
    """Keeps the serving version loaded: polls the registry pointer, loads a new version in
    the background and swaps one reference. The last few loaded versions stay in memory, so a
    rollback to one of them is a swap without a load."""

    def __init__(
        self, registry: Registry, poll_s: float, on_swap: Callable[[int], None] | None = None, keep: int = 3
    ) -> None:
        self.registry = registry
        self.poll_s = poll_s
        self.on_swap = on_swap
        self.keep = keep
        self.current: Loaded | None = None
        self.failed: dict[int, str] = {}
        self._loaded: dict[int, TextClassifier] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next_prefetch = 0.0
        try:
            self.sync()  # a replica starts with the serving version loaded
        except Exception:
            log.exception("first model load")
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.sync()
                if time.monotonic() >= self._next_prefetch:
                    self._next_prefetch = time.monotonic() + PREFETCH_S
                    self.prefetch()
            except Exception:
                log.exception("model follower")

    def prefetch(self) -> None:
        """Keep warm, without serving them, the versions a swap most likely goes to: the
        previous serving one (a rollback) and the newest ones (candidates the gate or an
        operator may promote), ``keep - 1`` in all."""
        state = self.registry.serving_state()
        newest = [m["version"] for m in reversed(self.registry.versions()) if not m.get("pruned")]
        likely = [v for v in (*state.get("history", [])[-1:], *newest) if v is not None]
        serving = self.current.version if self.current else None
        likely = list(dict.fromkeys(v for v in likely if v != serving))[: max(0, self.keep - 1)]
        for version in likely:
            if version in self._loaded or version in self.failed:
                continue
            try:
                model = self.registry.load_model(version)
            except RegistryError:
                continue  # not an error until it is asked to serve it
            with self._lock:
                self._loaded[version] = model
                self._trim()

    def _trim(self) -> None:
        serving = self.current.version if self.current else None
        while len(self._loaded) > self.keep:
            oldest = next(v for v in self._loaded if v != serving)
            self._loaded.pop(oldest)

    def sync(self) -> None:
        with self._lock:
            wanted = self.registry.serving()
            if wanted is None or (self.current and self.current.version == wanted) or wanted in self.failed:
                return
            model = self._loaded.pop(wanted, None)
            if model is None:
                try:
                    model = self.registry.load_model(wanted)
                except RegistryError as exc:
                    self.failed[wanted] = str(exc)
                    keeping = self.current and self.current.version
                    log.error("cannot load version %d, keeping %s: %s", wanted, keeping, exc)
                    return
            self._loaded[wanted] = model  # most recently used last
            self.current = Loaded(wanted, model)  # the swap: one reference
            self._trim()
        log.info("now serving version %d", wanted)
        if self.on_swap:
            self.on_swap(wanted)

    def stop(self) -> None:
        self._stop.set()


Pending = tuple[list[str], "asyncio.Future[tuple[int, list[Prediction]]]"]


class Batcher:
    """Dynamic batching across concurrent requests.

    Requests that arrive while a forward pass runs wait and then go together in the next one
    (up to ``max_texts`` texts); a lone request runs at once, so batching adds no wait at low
    load. Tokenization and the forward pass run in a worker thread, off the event loop. Each
    batch takes the serving model once, so a response never mixes two versions.
    """

    def __init__(
        self, current: Callable[[], Loaded | None], max_texts: int, executor: ThreadPoolExecutor | None = None
    ) -> None:
        self.current = current
        self.max_texts = max_texts
        self.batches = 0
        self._pending: list[Pending] = []
        self._worker: asyncio.Task[None] | None = None
        # one inference thread (shared by a replica's models): torch's OpenMP pool is per
        # calling thread, and several pools on few cores spin against each other
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="inference")

    async def predict(self, texts: list[str]) -> tuple[int, list[Prediction]]:
        future: asyncio.Future[tuple[int, list[Prediction]]] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[Pending]:
        taken: list[Pending] = []
        n = 0
        while self._pending and (not taken or n + len(self._pending[0][0]) <= self.max_texts):
            item = self._pending.pop(0)
            taken.append(item)
            n += len(item[0])
        return taken

    async def _drain(self) -> None:
        while self._pending:
            taken = self._take()
            loaded = self.current()
            try:
                if loaded is None:
                    raise ApiError(503, "not_ready", "no model loaded yet")
                texts = [t for item, _ in taken for t in item]
                preds = await asyncio.get_running_loop().run_in_executor(self._executor, loaded.model.predict, texts)
            except Exception as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            i = 0
            for item, future in taken:
                if not future.done():  # a cancelled request (client gone) is skipped
                    future.set_result((loaded.version, preds[i : i + len(item)]))
                i += len(item)


class EventLog:
    """Publishes prediction logs and HTTP feedback from a bounded queue in its own thread.

    A prediction log that finds the queue full is dropped (the response does not wait on
    Kafka); feedback is refused instead (503), since it is the platform's input. Every lost
    event is counted in the ``dropped`` counter that came with it."""

    def __init__(self, stream: StreamSettings, maxsize: int = 50_000) -> None:
        self.stream = stream
        self.maxsize = maxsize
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    def room(self, n: int) -> bool:
        """Whether ``n`` more events fit now."""
        return self._queue.qsize() + n <= self.maxsize

    def put(self, topic: str, event: Any, dropped: Any = None) -> bool:
        try:
            self._queue.put_nowait((topic, event, dropped))
            return True
        except queue.Full:
            if dropped is not None:
                dropped.inc()
            return False

    def _run(self) -> None:
        from streaming.kafka import Producer

        producer = None
        while True:
            topic, event, dropped = self._queue.get()
            try:
                if producer is None:
                    producer = Producer(self.stream, client_id="streamcl-serve", max_block_ms=5000)
                producer.publish(topic, event)
            except Exception as exc:
                if dropped is not None:
                    dropped.inc()
                log.warning("publishing to %s failed, event dropped: %s", topic, exc)


VERSION_BODY = {
    "type": "object",
    "properties": {"version": {"type": "integer", "minimum": 1}},
    "additionalProperties": True,
}
PREDICT_BODY = {
    "type": "object",
    "required": ["texts"],
    "properties": {
        "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "ids": {"type": "array", "items": {"type": "string"}},
        "domains": {"type": "array", "items": {"type": ["string", "null"]}},
    },
}
FEEDBACK_ITEM = {
    "type": "object",
    "required": ["id", "label"],
    "properties": {"id": {"type": "string"}, "label": {"type": "string"}, "ts": {"type": "number"}},
}
FEEDBACK_BODY = {"oneOf": [FEEDBACK_ITEM, {"type": "array", "items": FEEDBACK_ITEM, "minItems": 1}]}


def _body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    """OpenAPI for a JSON body the handler parses itself (to answer bad input its own way)."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def _check_token(request: Request, token: Any, missing_ok: bool) -> None:
    if token is None:
        if missing_ok:
            return
        raise ApiError(403, "admin_disabled", "admin calls are refused: STREAMCL_ADMIN_TOKEN is not set")
    header = request.headers.get("authorization", "")
    if not header:
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token>")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise ApiError(403, "forbidden", "wrong token")


async def _json_body(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, "request_too_large", f"body over {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "request_too_large", f"body over {limit} bytes")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_utf8", "the body is not valid UTF-8") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None


def _string_list(body: dict[str, Any], key: str, n: int | None, allow_null: bool = False) -> list[Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) or (allow_null and v is None) for v in value):
        raise ApiError(422, "invalid_request", f"'{key}' must be a list of strings")
    if n is not None and len(value) != n:
        raise ApiError(422, "invalid_request", f"'{key}' must have one entry per text ({n})")
    return value


def _public(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    return {k: v for k, v in meta.items() if k not in ("files", "offsets")} | {"offsets": meta.get("offsets", {})}


class Served:
    """One model in a replica: its registry, the version it serves, its batcher and metrics."""

    def __init__(
        self, spec: ModelSpec, settings: ServeSettings, replica: str, executor: ThreadPoolExecutor, events: EventLog
    ) -> None:
        self.name = spec.name
        self.default = spec.default
        self.stream = spec.stream
        self.controller_actor = spec.actor("controller")
        self.registry = registry_for(spec.stream, spec.learner)
        self.metrics = Metrics(CollectorRegistry(), parts=("serve",))
        source = spec.source(f"serve-{replica}")
        self.metrics.started.labels(source).set(time.time())
        self.pusher = MetricsPusher(self.metrics, source, labels=spec.metric_labels)
        self.follower = ModelFollower(
            self.registry, settings.model_poll_s, self._swapped, keep=settings.replica_warm_versions + 1
        )
        self.batcher = Batcher(lambda: self.follower.current, settings.max_batch_texts, executor)
        self.events = events
        self.log_dropped = self.metrics.events_dropped.labels("prediction_log")
        self.feedback_dropped = self.metrics.events_dropped.labels("feedback")
        self.controller_handle: Any = None

    def _swapped(self, version: int) -> None:
        self.metrics.replicas_ready.set(1)
        self.metrics.replica_version.set(version)

    def summary(self) -> dict[str, Any]:
        loaded = self.follower.current
        return {
            "name": self.name,
            "default": self.default,  # the default model also answers on /v1/...
            "path": f"/v1/models/{self.name}",
            "topic_prefix": self.stream.topic_prefix,
            "replica_version": loaded.version if loaded else None,
            "labels": loaded.model.labels if loaded else [],
        }


@serve.deployment
@serve.ingress(app)
class Api:
    """One replica of the endpoint: the default model on ``/v1/…``, every model (the default
    one too) on ``/v1/models/{name}/…``."""

    def __init__(self, models: list[ModelSpec], settings: ServeSettings) -> None:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)
        set_threads(settings.replica_torch_threads)
        self.settings = settings
        try:
            replica = serve.get_replica_context().replica_tag
        except Exception:
            replica = uuid.uuid4().hex[:8]
        executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        events = EventLog(models[0].stream)
        self.models = {m.name: Served(m, settings, replica, executor, events) for m in models}
        self.default = self.models[models[0].name]

    def _served(self, name: str) -> Served:
        served = self.models.get(name)
        if served is None:
            raise ApiError(404, "unknown_model", f"no model {name!r}; models: {', '.join(self.models)}")
        return served

    # models -----------------------------------------------------------------------------------
    @app.get("/v1/models")
    async def list_models(self, request: Request) -> JSONResponse:
        _check_token(request, self.settings.api_token, missing_ok=True)
        return JSONResponse({"models": [m.summary() for m in self.models.values()]})

    # predict ----------------------------------------------------------------------------------
    @app.post("/v1/predict", openapi_extra=_body(PREDICT_BODY, required=True))
    async def predict(self, request: Request) -> JSONResponse:
        return await self._counted_predict(self.default, request)

    @app.post("/v1/models/{name}/predict", openapi_extra=_body(PREDICT_BODY, required=True))
    async def model_predict(self, name: str, request: Request) -> JSONResponse:
        return await self._counted_predict(self._served(name), request)

    async def _counted_predict(self, m: Served, request: Request) -> JSONResponse:
        started = time.perf_counter()
        code = 500
        try:
            response = await self._predict(m, request)
            code = response.status_code
            return response
        except ApiError as exc:
            code = exc.status
            raise
        finally:
            m.metrics.requests.labels(str(code)).inc()
            m.metrics.latency.observe(time.perf_counter() - started)

    async def _predict(self, m: Served, request: Request) -> JSONResponse:
        _check_token(request, self.settings.api_token, missing_ok=True)
        body = await _json_body(request, self.settings.max_request_bytes)
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", 'expected {"texts": [...]}')
        texts = body.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ApiError(422, "invalid_request", "'texts' must be a list of strings")
        if not texts:
            raise ApiError(422, "invalid_request", "'texts' is empty")
        limit = self.settings.max_texts_per_request
        if len(texts) > limit:
            raise ApiError(413, "too_many_texts", f"{len(texts)} texts, limit {limit}")
        max_chars = m.stream.max_text_chars
        for i, t in enumerate(texts):
            if len(t) > max_chars:
                raise ApiError(413, "text_too_long", f"text {i} has {len(t)} characters, limit {max_chars}")
            if not t.strip():
                raise ApiError(422, "empty_text", f"text {i} is empty")
        ids = _string_list(body, "ids", len(texts)) or [uuid.uuid4().hex for _ in texts]
        if any(not i or len(i) > 256 for i in ids):
            raise ApiError(422, "invalid_request", "ids must be 1 to 256 characters")
        domains = _string_list(body, "domains", len(texts), allow_null=True) or [None] * len(texts)
        version, preds = await m.batcher.predict(texts)
        m.metrics.predicted.inc(len(texts))
        if self.settings.log_predictions:
            topics = m.stream.topics
            for id_, text, domain, p in zip(ids, texts, domains, preds):
                m.events.put(topics.texts, TextEvent(id=id_, text=text, domain=domain), m.log_dropped)
                m.events.put(
                    topics.predictions,
                    PredictionEvent(id=id_, label=p.label, scores=p.scores, model_version=version),
                    m.log_dropped,
                )
        return JSONResponse(
            {
                "model": m.name,
                "model_version": version,
                "predictions": [{"id": i, "label": p.label, "scores": p.scores} for i, p in zip(ids, preds)],
            }
        )

    # feedback ---------------------------------------------------------------------------------
    @app.post("/v1/feedback", status_code=202, openapi_extra=_body(FEEDBACK_BODY, required=True))
    async def feedback(self, request: Request) -> JSONResponse:
        return await self._feedback(self.default, request)

    @app.post("/v1/models/{name}/feedback", status_code=202, openapi_extra=_body(FEEDBACK_BODY, required=True))
    async def model_feedback(self, name: str, request: Request) -> JSONResponse:
        return await self._feedback(self._served(name), request)

    async def _feedback(self, m: Served, request: Request) -> JSONResponse:
        _check_token(request, self.settings.api_token, missing_ok=True)
        body = await _json_body(request, self.settings.max_request_bytes)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise ApiError(422, "invalid_request", "no feedback given")
        if len(items) > self.settings.max_texts_per_request:
            raise ApiError(413, "too_many_items", f"{len(items)} items, limit {self.settings.max_texts_per_request}")
        events = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                item = {k: item[k] for k in ("id", "label", "ts") if k in item}
            try:
                events.append(validate(FeedbackEvent, item, m.stream.max_text_chars))
            except InvalidEvent as exc:
                raise ApiError(422, exc.reason, f"item {i}: {exc.detail}") from None
        if not m.events.room(len(events)):  # backpressure: the client retries, nothing is lost silently
            raise ApiError(503, "overloaded", "the event queue to Kafka is full; retry later")
        for ev in events:
            m.events.put(m.stream.topics.feedback, ev, m.feedback_dropped)
        m.metrics.feedback.inc(len(events))
        return JSONResponse({"accepted": len(events)}, status_code=202)

    # model info -------------------------------------------------------------------------------
    @app.get("/v1/model")
    async def model(self, request: Request) -> JSONResponse:
        return await self._model(self.default, request)

    @app.get("/v1/models/{name}")
    async def named_model(self, name: str, request: Request) -> JSONResponse:
        return await self._model(self._served(name), request)

    @app.get("/v1/models/{name}/model")
    async def model_model(self, name: str, request: Request) -> JSONResponse:
        return await self._model(self._served(name), request)

    async def _model(self, m: Served, request: Request) -> JSONResponse:
        _check_token(request, self.settings.api_token, missing_ok=True)
        versions = await asyncio.to_thread(m.registry.versions)
        serving_v = m.registry.serving()
        serving = next((v for v in versions if v["version"] == serving_v), None)
        newer = [v for v in versions if v.get("status") == "candidate" and v["version"] > (serving_v or 0)]
        loaded = m.follower.current
        return JSONResponse(
            {
                "model": m.name,
                "serving": _public(serving),
                "candidate": _public(newer[-1]) if newer else None,
                "replica_version": loaded.version if loaded else None,
                "labels": loaded.model.labels if loaded else [],
            }
        )

    @app.get("/v1/model/versions")
    async def versions(self, request: Request) -> JSONResponse:
        return await self._versions(self.default, request)

    @app.get("/v1/models/{name}/model/versions")
    async def model_versions(self, name: str, request: Request) -> JSONResponse:
        return await self._versions(self._served(name), request)

    async def _versions(self, m: Served, request: Request) -> JSONResponse:
        _check_token(request, self.settings.api_token, missing_ok=True)
        versions = await asyncio.to_thread(m.registry.versions)
        serving = m.registry.serving()
        return JSONResponse(
            {
                "model": m.name,
                "serving": serving,
                "versions": [{**v, "serving": v["version"] == serving} for v in map(_public, versions) if v],
            }
        )

    # admin ------------------------------------------------------------------------------------
    @app.post("/v1/model/promote", openapi_extra=_body(VERSION_BODY, required=True))
    async def promote(self, request: Request) -> JSONResponse:
        return await self._admin(self.default, request, "promote", required=True)

    @app.post("/v1/models/{name}/model/promote", openapi_extra=_body(VERSION_BODY, required=True))
    async def model_promote(self, name: str, request: Request) -> JSONResponse:
        return await self._admin(self._served(name), request, "promote", required=True)

    @app.post("/v1/model/rollback", openapi_extra=_body(VERSION_BODY))
    async def rollback(self, request: Request) -> JSONResponse:
        return await self._admin(self.default, request, "rollback")

    @app.post("/v1/models/{name}/model/rollback", openapi_extra=_body(VERSION_BODY))
    async def model_rollback(self, name: str, request: Request) -> JSONResponse:
        return await self._admin(self._served(name), request, "rollback")

    @app.post("/v1/model/pin", openapi_extra=_body(VERSION_BODY))
    async def pin(self, request: Request) -> JSONResponse:
        return await self._admin(self.default, request, "pin")

    @app.post("/v1/models/{name}/model/pin", openapi_extra=_body(VERSION_BODY))
    async def model_pin(self, name: str, request: Request) -> JSONResponse:
        return await self._admin(self._served(name), request, "pin")

    @app.post("/v1/model/unpin")
    async def unpin(self, request: Request) -> JSONResponse:
        return await self._admin(self.default, request, "unpin", body=False)

    @app.post("/v1/models/{name}/model/unpin")
    async def model_unpin(self, name: str, request: Request) -> JSONResponse:
        return await self._admin(self._served(name), request, "unpin", body=False)

    async def _admin(
        self, m: Served, request: Request, action: str, required: bool = False, body: bool = True
    ) -> JSONResponse:
        _check_token(request, self.settings.admin_token, missing_ok=False)
        version = None
        raw = await request.body()
        if body and raw.strip():
            data = await _json_body(request, 64 * 1024)
            if not isinstance(data, dict):
                raise ApiError(422, "invalid_request", 'expected {"version": N}')
            version = data.get("version")
            if version is not None and (type(version) is not int or version < 1):
                raise ApiError(422, "invalid_request", "'version' must be a positive integer")
        if required and version is None:
            raise ApiError(422, "invalid_request", "'version' is required")
        try:
            controller = self._controller(m)
            result = await asyncio.wait_for(
                controller.call.remote("admin", action, version, "an operator (HTTP)"), timeout=30
            )
        except (TimeoutError, ValueError, RayError) as exc:
            m.controller_handle = None
            detail = f"the model controller did not answer: {type(exc).__name__}"
            raise ApiError(503, "controller_unavailable", detail) from None
        if "error" in result:
            raise ApiError(int(result["status"]), result["error"], result["detail"])
        await asyncio.to_thread(m.follower.sync)  # this replica swaps now; the others within a poll
        return JSONResponse(result)

    def _controller(self, m: Served) -> Any:
        if m.controller_handle is None:
            import ray

            m.controller_handle = ray.get_actor(m.controller_actor, namespace=NAMESPACE)
        return m.controller_handle

    # health -----------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when every model has a version loaded."""
        loaded = {name: m.follower.current for name, m in self.models.items()}
        missing = [name for name, current in loaded.items() if current is None]
        if missing:
            return JSONResponse(
                {"error": "not_ready", "detail": f"no model loaded yet for {', '.join(missing)}"}, status_code=503
            )
        versions = {name: current.version for name, current in loaded.items() if current is not None}
        return JSONResponse({"status": "ready", "model_version": versions[self.default.name], "models": versions})


def build_app(models: list[ModelSpec], settings: ServeSettings) -> Any:
    """The Serve application for ``models`` (the default one first), with replicas (or
    autoscaling) and CPU reservation from the settings."""
    scaling: dict[str, Any] = {"num_replicas": settings.replicas}
    if settings.max_replicas is not None and settings.max_replicas > settings.replicas:
        scaling = {
            "autoscaling_config": {
                "min_replicas": settings.replicas,
                "max_replicas": settings.max_replicas,
                "target_ongoing_requests": settings.target_ongoing_requests,
            }
        }
    return Api.options(  # type: ignore[attr-defined]
        **scaling,
        max_ongoing_requests=settings.max_ongoing_requests,
        # Ray gives a fractional-CPU actor OMP_NUM_THREADS=1, which slows torch's kernels even
        # after set_num_threads; passive OpenMP threads do not spin between ops, leaving the
        # cores to the proxy and the event loop (measured: bench/serving.py)
        ray_actor_options={
            "num_cpus": settings.replica_cpus,
            "runtime_env": {
                "env_vars": {"OMP_NUM_THREADS": str(settings.replica_torch_threads), "OMP_WAIT_POLICY": "PASSIVE"}
            },
        },
        health_check_period_s=2,
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    ).bind(models, settings)


def from_env(args: dict[str, str] | None = None) -> Any:
    """Application builder for Serve config files and KubeRay's ``serveConfigV2``
    (``import_path: services.serve_app:from_env``): every setting from ``STREAMCL_*``."""
    from services.settings import PlatformSettings

    return build_app(model_specs(StreamSettings(), LearnerSettings(), PlatformSettings().models), ServeSettings())
