"""The HTTP API of a replica: routes declared once for the default model (``/v1/...``) and the
named ones (``/v1/models/{name}/...``), bodies validated by the models of :mod:`._schemas`, and
every error answered as ``{"error", "detail"}`` with a status the OpenAPI document declares.

Before a body is parsed, a route checks the token and its role (401, 403: before anything else,
so an unknown model name says nothing to a caller without a token), resolves its model (404),
and reads the body as it streams in, at most its size (413), as JSON at most
:data:`~streaming.events.MAX_DEPTH` deep (400), in that order, whatever the Content-Type says.
The caller's token name is on ``request.state.caller`` (:func:`services._auth.caller`)."""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from services._auth import Authenticator, Refused, caller
from services._forget import FORGET_BODY_BYTES, ForgetRequest
from services.serving._errors import ServingError, TooLarge
from services.serving._httperrors import (
    HttpError,
    errors,
    on_http_error,
    on_invalid,
    on_serving_error,
    on_unexpected,
    responses,
    status_of,
)
from services.serving._replica import Replica, Served
from services.serving._schemas import (
    AdminResult,
    FeedbackAccepted,
    FeedbackItem,
    Health,
    ModelInfo,
    ModelList,
    PredictRequest,
    PredictResponse,
    PromoteRequest,
    Ready,
    RequestBodies,
    VersionList,
    VersionRequest,
    request_bodies,
)
from streaming.events import TOO_DEEP, FeedbackEvent, nests_deeper
from streaming.pii import Masker, masker_for

log = logging.getLogger("streamcl.serve")

ADMIN_BODY_BYTES = 64 * 1024
BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")


@dataclass(frozen=True)
class Policy:
    """What a route checks before its body is read: a token's role, its model, the body's size."""

    auth: Literal["predict", "feedback", "read", "admin"] | None = "read"  # read: any role
    per_model: bool = True
    counted: bool = False  # counted in streamcl_predict_requests_total and the latency histogram
    empty_body_is_none: bool = False
    body_bytes: int | None = None  # None: STREAMCL_MAX_REQUEST_BYTES


F = TypeVar("F", bound=Callable[..., Any])


def policy(p: Policy) -> Callable[[F], F]:
    """Attach ``p`` to an endpoint (read by :class:`_Route`)."""

    def mark(endpoint: F) -> F:
        endpoint.policy = p  # type: ignore[attr-defined]
        return endpoint

    return mark


# routes ---------------------------------------------------------------------------------------
def _authenticate(request: Request, p: Policy) -> None:
    """Check the caller's token for the route's role, and note its name on the request."""
    if p.auth is None:
        return
    auth: Authenticator = request.app.state.auth
    role = None if p.auth == "read" else p.auth
    try:
        request.state.caller = auth.authenticate(request.headers.get("authorization", ""), role)
    except Refused as exc:
        raise HttpError(exc.status, exc.error, exc.detail) from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (a chunked body too)."""
    too_large = HttpError(413, "request_too_large", f"body over {limit} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_request(request: Request, limit: int, empty_is_none: bool) -> Request:
    """``request`` with its body read (at most ``limit`` bytes) and parsed as JSON, whatever its
    Content-Type; an empty body stays empty when ``empty_is_none``."""
    body = await _read_body(request, limit)
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    parsed = Request({**request.scope, "headers": [*headers, (b"content-type", b"application/json")]}, request.receive)
    if empty_is_none and not body.strip():
        parsed._body = b""
        return parsed
    try:
        parsed._json = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "invalid_utf8", "the body is not valid UTF-8") from None
    except ValueError as exc:
        raise HttpError(400, "invalid_json", str(exc)) from None
    except RecursionError:
        raise HttpError(400, "invalid_json", TOO_DEEP) from None
    if nests_deeper(parsed._json):
        raise HttpError(400, "invalid_json", TOO_DEEP)
    parsed._body = body
    return parsed


class _Route(APIRoute):
    """A route that checks its token, resolves its model and reads its body as its
    :class:`Policy` says before FastAPI validates the body, and counts predict requests."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        p: Policy = getattr(self.endpoint, "policy", Policy())
        has_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            settings = request.app.state.replica.settings
            if has_body:
                request = await _json_request(request, p.body_bytes or settings.max_request_bytes, p.empty_body_is_none)
            return await handle(request)

        async def route(request: Request) -> Response:
            _authenticate(request, p)
            if not p.per_model:
                return await checked(request)
            served = _served(request)
            if not p.counted:
                return await checked(request)
            with served.metrics.latency.time():
                code = 500
                try:
                    response = await checked(request)
                    code = response.status_code
                    return response
                except Exception as exc:
                    code = status_of(exc)
                    raise
                finally:
                    served.metrics.requests.labels(str(code)).inc()

        return route


def _served(request: Request) -> Served:
    """The model a route answers for: ``{name}`` in the path, else the default one."""
    replica: Replica = request.app.state.replica
    return replica.served(request.path_params.get("name"))


async def _served_here(request: Request) -> Served:
    """:func:`_served` as a dependency: async, so FastAPI does not run it in a worker thread
    (a thread hop per request costs milliseconds on a busy replica)."""
    return _served(request)


async def _who(request: Request) -> str:
    """The caller's token name, for the audit trail of an admin call (never the token)."""
    return caller(request)


async def _model_name(name: str = Path(description="a model of the deployment (GET /v1/models)")) -> str:
    return name  # declares {name} for the document; _served reads it


def _data_routes(bodies: RequestBodies) -> APIRouter:
    router = APIRouter(route_class=_Route)
    predict_body, feedback_body = bodies.predict, bodies.feedback

    @router.post("/predict", response_model=None, responses=responses(PredictResponse, 200, 400, 413, 422, 503))
    @policy(Policy(auth="predict", counted=True))
    async def predict(request: Request, body: predict_body, served: Served = Depends(_served_here)) -> JSONResponse:  # type: ignore[valid-type]
        """Classify texts with the serving version; each text and prediction is logged to Kafka
        (both on the masked text with STREAMCL_PII=mask)."""
        req = cast(PredictRequest, body)
        limit = served.stream.max_text_chars  # a named model may allow fewer than the document says
        for i, text in enumerate(req.texts):
            if len(text) > limit:
                raise TooLarge(f"text {i} has {len(text)} characters, limit {limit}", "text_too_long", limit)
        masker: Masker | None = request.app.state.maskers.get(served.name)
        texts = req.texts if masker is None else [t[:limit] for t in masker.mask_many(req.texts)]
        return JSONResponse(await served.predict(texts, req.ids, req.domains))

    accepted = responses(FeedbackAccepted, 202, 400, 413, 422, 503)

    @router.post("/feedback", status_code=202, response_model=None, responses=accepted)
    @policy(Policy(auth="feedback"))
    async def feedback(request: Request, body: feedback_body, served: Served = Depends(_served_here)) -> JSONResponse:  # type: ignore[valid-type]
        """True labels for earlier texts (by id), published to the feedback topic: 202 once Kafka
        acknowledged every one, 503 with Retry-After when it did not in time (retry them)."""
        items: list[FeedbackItem] = body if isinstance(body, list) else [body]
        _check_labels([i.label for i in items], served, request.app.state.replica.settings)
        events = [FeedbackEvent(id=i.id, label=i.label, ts=i.ts) for i in items]
        return JSONResponse({"accepted": await served.feedback(events)}, status_code=202)

    @router.get("/model", response_model=None, responses=responses(ModelInfo, 200))
    async def model(served: Served = Depends(_served_here)) -> JSONResponse:
        """The serving version and the newest candidate, with their metrics."""
        return JSONResponse(await served.info())

    @router.get("/model/versions", response_model=None, responses=responses(VersionList, 200))
    async def versions(served: Served = Depends(_served_here)) -> JSONResponse:
        """Every version of the model, the start-up one and pruned ones included."""
        return JSONResponse(await served.versions())

    return router


def _check_labels(labels: list[str], served: Served, settings: Any) -> None:
    """Refuse (422) a label longer than STREAMCL_MAX_LABEL_CHARS, or new labels that would grow
    the model past STREAMCL_MAX_LABELS (each is a row of the head and a score in every answer)."""
    for i, label in enumerate(labels):
        if len(label) > settings.max_label_chars:
            detail = f"item {i}: label has {len(label)} characters, limit {settings.max_label_chars}"
            raise HttpError(422, "invalid_label", detail)
    known, limit = set(served.summary()["labels"]), served.stream.max_labels  # the learner's own limit too
    new = set(labels) - known
    if new and len(known) + len(new) > limit:
        raise HttpError(422, "label_limit", f"{len(new)} new labels would grow the model past {limit} labels")


def _admin_routes() -> APIRouter:
    router = APIRouter(route_class=_Route, tags=["admin"])
    errors = (400, 401, 403, 404, 409, 413, 422, 503)
    admin = Policy(auth="admin", empty_body_is_none=True, body_bytes=ADMIN_BODY_BYTES)

    @router.post("/model/promote", response_model=None, responses=responses(AdminResult, 200, *errors))
    @policy(admin)
    async def promote(
        body: PromoteRequest, served: Served = Depends(_served_here), who: str = Depends(_who)
    ) -> JSONResponse:
        """Serve ``version`` (a rejected one too: an operator's override)."""
        return JSONResponse(await served.admin("promote", body.version, who))

    @router.post("/model/rollback", response_model=None, responses=responses(AdminResult, 200, *errors))
    @policy(admin)
    async def rollback(
        body: VersionRequest | None = None, served: Served = Depends(_served_here), who: str = Depends(_who)
    ) -> JSONResponse:
        """Serve ``version``, or without one the previous serving version."""
        return JSONResponse(await served.admin("rollback", body.version if body else None, who))

    @router.post("/model/pin", response_model=None, responses=responses(AdminResult, 200, *errors))
    @policy(admin)
    async def pin(
        body: VersionRequest | None = None, served: Served = Depends(_served_here), who: str = Depends(_who)
    ) -> JSONResponse:
        """Keep serving ``version`` (default: the serving one) until unpinned: the gate promotes nothing."""
        return JSONResponse(await served.admin("pin", body.version if body else None, who))

    @router.post("/model/unpin", response_model=None, responses=responses(AdminResult, 200, 401, 403, 404, 409, 503))
    @policy(admin)
    async def unpin(served: Served = Depends(_served_here), who: str = Depends(_who)) -> JSONResponse:
        """Let the gate promote again."""
        return JSONResponse(await served.admin("unpin", None, who))

    @router.post("/forget", response_model=None, responses=responses(dict, 200, *errors))
    @policy(Policy(auth="admin", body_bytes=FORGET_BODY_BYTES))
    async def forget(
        body: ForgetRequest, served: Served = Depends(_served_here), who: str = Depends(_who)
    ) -> JSONResponse:
        """Erase the texts of ``ids`` (services/_forget.py); says which versions trained on them."""
        if body.model is not None and body.model != served.name:
            raise HttpError(422, "invalid_request", f"use /v1/models/{body.model}/forget for model {body.model!r}")
        return JSONResponse(await served.forget(list(dict.fromkeys(body.ids)), who))

    return router


def _top_routes(api_auth: list[Any], api_errors: dict[int | str, dict[str, Any]]) -> APIRouter:
    router = APIRouter(route_class=_Route)

    @router.get(
        "/v1/models", response_model=None, responses=responses(ModelList, 200) | api_errors, dependencies=api_auth
    )
    @policy(Policy(per_model=False))
    async def list_models(request: Request) -> JSONResponse:
        """Every model of the deployment: name, path, labels, the version this replica serves."""
        replica: Replica = request.app.state.replica
        return JSONResponse({"models": [m.summary() for m in replica.models.values()]})

    @router.get("/healthz", response_model=None, responses=responses(Health, 200))
    @policy(Policy(auth=None, per_model=False))
    async def healthz() -> JSONResponse:
        """Liveness."""
        return JSONResponse({"status": "ok"})

    @router.get("/readyz", response_model=None, responses=responses(Ready, 200, 503))
    @policy(Policy(auth=None, per_model=False))
    async def readyz(request: Request) -> JSONResponse:
        """Ready when every model has a version loaded."""
        replica: Replica = request.app.state.replica
        return JSONResponse(replica.ready())

    return router


def create_app(replica: Replica) -> FastAPI:
    """The FastAPI app of ``replica``: its document carries the limits of its settings."""
    settings = replica.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(replica.close)  # Serve stops the replica: send its queued events

    app = FastAPI(
        title="streamcl", version="1", description="Continual-learning text classifier endpoint", lifespan=lifespan
    )
    app.state.replica = replica
    app.state.maskers = {name: masker_for(m.stream) for name, m in replica.models.items()}  # STREAMCL_PII
    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(HttpError, on_http_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_unexpected)
    max_chars = max(m.stream.max_text_chars for m in replica.models.values())
    data = _data_routes(request_bodies(settings.max_texts_per_request, max_chars))
    admin = _admin_routes()
    app.state.auth = auth = Authenticator.from_settings(settings)
    api_auth = [Security(BEARER)] if auth.guards("predict") else []
    api_errors = errors(401, 403) if api_auth else {}
    named = errors(404, 422)  # an unknown model; 422 replaces FastAPI's own (it declares one for {name})
    for prefix, extra, more in (("/v1", [], {}), ("/v1/models/{name}", [Depends(_model_name)], named)):
        app.include_router(data, prefix=prefix, dependencies=[*extra, *api_auth], responses=api_errors | more)
        app.include_router(admin, prefix=prefix, dependencies=[*extra, Security(BEARER)], responses=more)
    _named_alias(app, api_auth, api_errors | named)
    app.include_router(_top_routes(api_auth, api_errors))
    return app


def _named_alias(app: FastAPI, auth: list[Any], errors: dict[int | str, dict[str, Any]]) -> None:
    """``GET /v1/models/{name}``: the same as ``/v1/models/{name}/model``."""
    router = APIRouter(route_class=_Route)

    @router.get("/v1/models/{name}", response_model=None, responses=responses(ModelInfo, 200))
    async def named_model(name: str = Path(), served: Served = Depends(_served_here)) -> JSONResponse:
        """The serving version and the newest candidate of model ``name``."""
        return JSONResponse(await served.info())

    app.include_router(router, dependencies=auth, responses=errors)
