"""Serving on Ray Serve in two parts: the replica runtime (model follower, batcher, event log,
the models of a replica; no HTTP) and the HTTP layer (routes, request and response models, the
OpenAPI document generated from them). The event log sends feedback and waits for Kafka's
acknowledgement before 202. The Serve deployment is ``services.serve_app``."""

from services.serving._errors import (
    AdminRefused,
    ControllerUnavailable,
    NotAcknowledged,
    NotReady,
    Overloaded,
    ServingError,
    TooLarge,
    UnknownModel,
)
from services.serving._eventlog import EventLog
from services.serving._http import create_app
from services.serving._httperrors import status_of
from services.serving._replica import Replica, Served
from services.serving._runtime import Batcher, Loaded, ModelFollower, backoff

__all__ = [
    "AdminRefused",
    "Batcher",
    "ControllerUnavailable",
    "EventLog",
    "Loaded",
    "ModelFollower",
    "NotAcknowledged",
    "NotReady",
    "Overloaded",
    "Replica",
    "Served",
    "ServingError",
    "TooLarge",
    "UnknownModel",
    "backoff",
    "create_app",
    "status_of",
]
