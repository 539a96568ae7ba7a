"""Serving on Ray Serve in two parts: the replica runtime (model follower, batcher, event log,
the models of a replica; no HTTP) and the HTTP layer (routes, request and response models, the
OpenAPI document generated from them). The Serve deployment is ``services.serve_app``."""

from services.serving._errors import (
    AdminRefused,
    ControllerUnavailable,
    NotReady,
    Overloaded,
    ServingError,
    TooLarge,
    UnknownModel,
)
from services.serving._http import create_app, status_of
from services.serving._replica import Replica, Served
from services.serving._runtime import Batcher, EventLog, Loaded, ModelFollower

__all__ = [
    "AdminRefused",
    "Batcher",
    "ControllerUnavailable",
    "EventLog",
    "Loaded",
    "ModelFollower",
    "NotReady",
    "Overloaded",
    "Replica",
    "Served",
    "ServingError",
    "TooLarge",
    "UnknownModel",
    "create_app",
    "status_of",
]
