"""The HTTP API of a replica: routes declared once for the default model (``/v1/...``) and the
named ones (``/v1/models/{name}/...``), bodies validated by the models of :mod:`._schemas`, and
every error answered as ``{"error", "detail"}`` with a status the OpenAPI document declares.

Before a body is parsed, a route resolves its model (404), checks the token (401, 403) and the
body's size (413) and JSON (400), in that order, whatever the Content-Type says."""

import hmac
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from services.serving._errors import AdminRefused, NotReady, Overloaded, ServingError, TooLarge, UnknownModel
from services.serving._replica import Replica, Served
from services.serving._schemas import (
    AdminResult,
    ErrorBody,
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
from streaming.events import FeedbackEvent, reason_for

log = logging.getLogger("streamcl.serve")

ADMIN_BODY_BYTES = 64 * 1024
BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
STATUS_TEXT = {
    400: "The body is not JSON (or not UTF-8)",
    401: "No Authorization header",
    403: "A wrong token, or admin calls are disabled (no admin token set)",
    404: "No such model or version",
    409: "The version cannot be served now",
    413: "Over a limit: body size, texts per request, characters per text",
    422: "The body does not match the schema",
    503: "No model loaded yet, the event queue is full, or the controller did not answer",
}


class HttpError(Exception):
    """An error of the HTTP exchange itself (token, body size, JSON)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True)
class Policy:
    """What a route checks before its body is read: its model, a token, the body's size."""

    auth: Literal["api", "admin"] | None = "api"
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


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for error statuses: each an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": STATUS_TEXT[code]} for code in codes}


def responses(ok: type, status: int, *codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: its success body and its error statuses."""
    return {status: {"model": ok}} | errors(*codes)


# errors ---------------------------------------------------------------------------------------
SERVING_STATUS: dict[type[ServingError], int] = {NotReady: 503, Overloaded: 503, UnknownModel: 404, TooLarge: 413}


def status_of(exc: BaseException) -> int:
    """The status ``exc`` is answered with."""
    if isinstance(exc, AdminRefused):
        return exc.status
    if isinstance(exc, ServingError):
        return next((s for t, s in SERVING_STATUS.items() if isinstance(exc, t)), 503)
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, RequestValidationError):
        return invalid(exc.errors())[0]
    return 500


#: The fields of a feedback item (their problems are named as the events' decoder names them).
FEEDBACK_FIELDS = ("id", "label", "ts")


def invalid(problems: Any) -> tuple[int, str, str]:
    """Status, error code and detail of a body that failed validation: 413 when over a limit."""
    for e in problems:
        loc = _loc(e)
        if e["type"] in ("too_long", "string_too_long") and loc[:1] in (["texts"], []):
            code = "too_many_items" if not loc else "text_too_long" if len(loc) > 1 else "too_many_texts"
            return 413, code, _where(e)
    first = problems[0]
    loc = _loc(first)
    if loc[:1] == ["texts"] and len(loc) == 2 and first["type"] == "string_pattern_mismatch":
        return 422, "empty_text", f"text {loc[1]} is empty"
    field = next((p for p in loc if p in FEEDBACK_FIELDS), None)
    if field is not None:  # a feedback item: the events' own vocabulary
        reason, detail = reason_for({**first, "loc": [field]})
        return 422, reason, f"item {loc[0] if loc[0].isdigit() else 0}: {detail}"
    return 422, "invalid_request", _where(first)


def _loc(problem: Any) -> list[str]:
    """Where a validation problem is, without FastAPI's ``body`` and the feedback union's tags."""
    return [str(p) for p in problem.get("loc", ()) if p not in ("body", "item", "list")]


def _where(problem: Any) -> str:
    loc = ".".join(_loc(problem))
    return f"{loc}: {problem['msg']}" if loc else str(problem["msg"])


def _error(status: int, error: str, detail: str | None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


async def _on_serving_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    retry = getattr(exc, "retry_after", None)
    return _error(status_of(exc), exc.error, exc.detail, {"Retry-After": str(round(retry))} if retry else None)


async def _on_http_error(_: Request, exc: Exception) -> Response:
    if isinstance(exc, HttpError):
        return _error(exc.status, exc.error, exc.detail)
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _on_invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error(*invalid(exc.errors()))


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return _error(500, "internal_error", type(exc).__name__)


# routes ---------------------------------------------------------------------------------------
def _check_token(request: Request, token: Any, missing_ok: bool) -> None:
    if token is None:
        if missing_ok:
            return
        raise HttpError(403, "admin_disabled", "admin calls are refused: STREAMCL_ADMIN_TOKEN is not set")
    header = request.headers.get("authorization", "")
    if not header:
        raise HttpError(401, "unauthorized", "missing Authorization: Bearer <token>")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HttpError(403, "forbidden", "wrong token")


async def _json_request(request: Request, limit: int, empty_is_none: bool) -> Request:
    """``request`` with its body read (at most ``limit`` bytes) and parsed as JSON, whatever its
    Content-Type; an empty body stays empty when ``empty_is_none``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HttpError(413, "request_too_large", f"body over {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise HttpError(413, "request_too_large", f"body over {limit} bytes")
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
    parsed._body = body
    return parsed


class _Route(APIRoute):
    """A route that resolves its model, checks its token and reads its body as its
    :class:`Policy` says before FastAPI validates the body, and counts predict requests."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        p: Policy = getattr(self.endpoint, "policy", Policy())
        has_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            settings = request.app.state.replica.settings
            if p.auth is not None:
                token = settings.admin_token if p.auth == "admin" else settings.api_token
                _check_token(request, token, missing_ok=p.auth == "api")
            if has_body:
                request = await _json_request(request, p.body_bytes or settings.max_request_bytes, p.empty_body_is_none)
            return await handle(request)

        async def route(request: Request) -> Response:
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


def _model_name(name: str = Path(description="a model of the deployment (GET /v1/models)")) -> str:
    return name  # declares {name} for the document; _served reads it


def _data_routes(bodies: RequestBodies) -> APIRouter:
    router = APIRouter(route_class=_Route)
    predict_body, feedback_body = bodies.predict, bodies.feedback

    @router.post("/predict", response_model=None, responses=responses(PredictResponse, 200, 400, 413, 422, 503))
    @policy(Policy(counted=True))
    async def predict(body: predict_body, served: Served = Depends(_served)) -> JSONResponse:  # type: ignore[valid-type]
        """Classify texts with the serving version; each text and prediction is logged to Kafka."""
        req = cast(PredictRequest, body)
        limit = served.stream.max_text_chars  # a named model may allow fewer than the document says
        for i, text in enumerate(req.texts):
            if len(text) > limit:
                raise TooLarge(f"text {i} has {len(text)} characters, limit {limit}", "text_too_long", limit)
        return JSONResponse(await served.predict(req.texts, req.ids, req.domains))

    accepted = responses(FeedbackAccepted, 202, 400, 413, 422, 503)

    @router.post("/feedback", status_code=202, response_model=None, responses=accepted)
    async def feedback(body: feedback_body, served: Served = Depends(_served)) -> JSONResponse:  # type: ignore[valid-type]
        """True labels for earlier texts (by id), published to the feedback topic."""
        items: list[FeedbackItem] = body if isinstance(body, list) else [body]
        events = [FeedbackEvent(id=i.id, label=i.label, ts=i.ts) for i in items]
        return JSONResponse({"accepted": served.feedback(events)}, status_code=202)

    @router.get("/model", response_model=None, responses=responses(ModelInfo, 200))
    async def model(served: Served = Depends(_served)) -> JSONResponse:
        """The serving version and the newest candidate, with their metrics."""
        return JSONResponse(await served.info())

    @router.get("/model/versions", response_model=None, responses=responses(VersionList, 200))
    async def versions(served: Served = Depends(_served)) -> JSONResponse:
        """Every version of the model, the start-up one and pruned ones included."""
        return JSONResponse(await served.versions())

    return router


def _admin_routes() -> APIRouter:
    router = APIRouter(route_class=_Route, tags=["admin"])
    errors = (400, 401, 403, 404, 409, 413, 422, 503)
    admin = Policy(auth="admin", empty_body_is_none=True, body_bytes=ADMIN_BODY_BYTES)

    @router.post("/model/promote", response_model=None, responses=responses(AdminResult, 200, *errors))
    @policy(admin)
    async def promote(body: PromoteRequest, served: Served = Depends(_served)) -> JSONResponse:
        """Serve ``version`` (a rejected one too: an operator's override)."""
        return JSONResponse(await served.admin("promote", body.version))

    @router.post("/model/rollback", response_model=None, responses=responses(AdminResult, 200, *errors))
    @policy(admin)
    async def rollback(body: VersionRequest | None = None, served: Served = Depends(_served)) -> JSONResponse:
        """Serve ``version``, or without one the previous serving version."""
        return JSONResponse(await served.admin("rollback", body.version if body else None))

    @router.post("/model/pin", response_model=None, responses=responses(AdminResult, 200, *errors))
    @policy(admin)
    async def pin(body: VersionRequest | None = None, served: Served = Depends(_served)) -> JSONResponse:
        """Keep serving ``version`` (default: the serving one) until unpinned: the gate promotes nothing."""
        return JSONResponse(await served.admin("pin", body.version if body else None))

    @router.post("/model/unpin", response_model=None, responses=responses(AdminResult, 200, 401, 403, 404, 409, 503))
    @policy(admin)
    async def unpin(served: Served = Depends(_served)) -> JSONResponse:
        """Let the gate promote again."""
        return JSONResponse(await served.admin("unpin", None))

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
    app = FastAPI(title="streamcl", version="1", description="Continual-learning text classifier endpoint")
    app.state.replica = replica
    app.add_exception_handler(ServingError, _on_serving_error)
    app.add_exception_handler(HttpError, _on_http_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(Exception, _on_unexpected)
    max_chars = max(m.stream.max_text_chars for m in replica.models.values())
    data = _data_routes(request_bodies(settings.max_texts_per_request, max_chars))
    admin = _admin_routes()
    api_auth = [Security(BEARER)] if settings.api_token else []
    api_errors = errors(401, 403) if settings.api_token else {}
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
    async def named_model(name: str = Path(), served: Served = Depends(_served)) -> JSONResponse:
        """The serving version and the newest candidate of model ``name``."""
        return JSONResponse(await served.info())

    app.include_router(router, dependencies=auth, responses=errors)
