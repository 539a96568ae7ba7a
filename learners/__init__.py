"""The model (encoder + growing head), learners, the registry and the learner loop.

Importing this package is cheap; torch loads with the submodules that need it."""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Example": "learners.base",
    "Learner": "learners.base",
    "FineTuneLearner": "learners.finetune",
    "TextClassifier": "learners.model",
    "Registry": "learners.registry",
    "LocalRegistry": "learners.registry",
    "open_registry": "learners.registry",
    "NewVersion": "learners.registry",
    "VersionMeta": "learners.registry",
    "LearnerSettings": "learners.settings",
    "LearnerService": "learners.service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'learners' has no attribute {name!r}")
