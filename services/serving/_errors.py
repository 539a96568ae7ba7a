"""Why a replica cannot answer, as data: the HTTP layer maps each to a status and a JSON body."""

from __future__ import annotations

from streaming.errors import StreamclError


class ServingError(StreamclError):
    """A call the replica cannot answer; ``error`` is the API's error code, ``detail`` says why."""

    error = "serving_error"

    def __init__(self, detail: str, error: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if error is not None:
            self.error = error


class NotReady(ServingError):
    """No version is loaded yet; retrying after ``retry_after`` seconds may succeed."""

    error = "not_ready"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Overloaded(ServingError):
    """The event queue to Kafka is full; the client retries after ``retry_after`` seconds."""

    error = "overloaded"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotAcknowledged(ServingError):
    """The broker did not acknowledge events within the bound (or refused them): they are not
    accepted. Some may still arrive later; the client retries after ``retry_after`` seconds."""

    error = "not_acknowledged"

    def __init__(self, detail: str, retry_after: float = 2.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UnknownModel(ServingError):
    """No model of that ``name`` in this deployment."""

    error = "unknown_model"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no model {name!r}; models: {', '.join(known)}")
        self.name, self.known = name, known


class TooLarge(ServingError):
    """A request over a limit (``limit`` in the unit the detail names)."""

    def __init__(self, detail: str, error: str, limit: int) -> None:
        super().__init__(detail, error)
        self.limit = limit


class ControllerUnavailable(ServingError):
    """The model controller did not answer an operator's call."""

    error = "controller_unavailable"


class AdminRefused(ServingError):
    """The model controller refused an operator's call; ``status`` is the one it chose
    (404 unknown version, 409 a version that cannot be served, 422 a missing version)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail, error)
        self.status = status
