"""How a replica's HTTP layer answers errors: every one as ``{"error", "detail"}`` with the status
the OpenAPI document declares for it (``STATUS_TEXT``), validation problems named as the
events' decoder names them."""

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import Request

from services.metrics import REFUSAL_REASONS
from services.serving._errors import AdminRefused, ServingError, TooLarge, UnknownModel
from services.serving._schemas import ErrorBody
from streaming.events import reason_for

log = logging.getLogger("streamcl.serve")

STATUS_TEXT = {
    400: "The body is not JSON (or not UTF-8)",
    401: "No Authorization header",
    403: "A wrong token, a token without the call's role, or admin calls are disabled (no admin token set)",
    404: "No such model or version",
    409: "The version cannot be served now",
    413: "Over a limit: body size, texts per request, characters per text",
    422: "The body does not match the schema, or a label over a limit (label_limit: labels per model)",
    503: "No model loaded yet, Kafka did not acknowledge the feedback in time (retry after Retry-After), "
    "or the controller did not answer",
}


class HttpError(Exception):
    """An error of the HTTP exchange itself (token, body size, JSON)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for error statuses: each an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": STATUS_TEXT[code]} for code in codes}


def responses(ok: type, status: int, *codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: its success body and its error statuses."""
    return {status: {"model": ok}} | errors(*codes)


# errors ---------------------------------------------------------------------------------------
#: Statuses of the domain errors that are not a 503 (no model loaded, Kafka not acknowledging...).
SERVING_STATUS: dict[type[ServingError], int] = {UnknownModel: 404, TooLarge: 413}


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


async def on_serving_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    retry = getattr(exc, "retry_after", None)
    return _error(status_of(exc), exc.error, exc.detail, {"Retry-After": str(round(retry))} if retry else None)


def count_refused(request: Request, reason: str) -> None:
    """Count a refusal (:data:`~services.metrics.REFUSAL_REASONS`) on the model the path names,
    else on the default one (a call refused for its token may name no model, or an unknown one)."""
    if reason not in REFUSAL_REASONS:
        return
    replica = request.app.state.replica
    try:
        served = replica.served(request.path_params.get("name"))
    except UnknownModel:
        served = replica.served(None)
    served.metrics.refused.labels(reason).inc()


async def on_http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HttpError):
        count_refused(request, exc.error)
        return _error(exc.status, exc.error, exc.detail)
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    status, error, detail = invalid(exc.errors())
    domain = any(_loc(p)[:1] == ["domains"] for p in exc.errors())
    count_refused(request, "invalid_domain" if domain and error == "invalid_request" else error)
    return _error(status, error, detail)


async def on_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return _error(500, "internal_error", type(exc).__name__)
