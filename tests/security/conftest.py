"""A replica the HTTP layer can answer for without a model, Kafka or Ray (the security suite
tests the HTTP layer's checks, not the model)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.metrics import ServeMetrics
from services.serving import UnknownModel, create_app
from services.settings import ServeSettings


class FakeServed:
    """A model that answers every call at once and records what it was asked."""

    def __init__(self, name: str, labels: list[str]) -> None:
        self.name, self.labels = name, labels
        self.stream = SimpleNamespace(max_text_chars=100)
        self.metrics = ServeMetrics(CollectorRegistry())
        self.calls: list[Any] = []

    def summary(self) -> dict[str, Any]:
        path = f"/v1/models/{self.name}"
        return {"name": self.name, "default": True, "path": path, "topic_prefix": "t", "replica_version": 1,
                "labels": self.labels}  # fmt: skip

    async def predict(self, texts: list[str], ids: Any, domains: Any) -> dict[str, Any]:
        self.calls.append(("predict", texts, domains))
        preds = [{"id": f"id{i}", "label": "a", "scores": {"a": 1.0}} for i in range(len(texts))]
        return {"model": self.name, "model_version": 1, "predictions": preds}

    async def feedback(self, events: list[Any]) -> int:
        self.calls.append(("feedback", [e.label for e in events]))
        return len(events)

    async def info(self) -> dict[str, Any]:
        return {"model": self.name, "serving": None, "candidate": None, "replica_version": 1, "labels": self.labels}

    async def versions(self) -> dict[str, Any]:
        return {"model": self.name, "serving": None, "versions": []}

    async def admin(self, action: str, version: int | None, who: str = "operator") -> dict[str, Any]:
        self.calls.append((action, version, who))
        return {"serving": version or 1, "pinned": False, "history": []}

    async def forget(self, ids: list[str], who: str) -> dict[str, Any]:
        self.calls.append(("forget", ids, who))
        return {"model": self.name, "ids": len(ids), "learner": {}, "joiners": [], "trained_in": {}}


class FakeReplica:
    def __init__(self, settings: ServeSettings, labels: list[str]) -> None:
        self.settings = settings
        self.models = {"default": FakeServed("default", labels), "news": FakeServed("news", labels)}

    def served(self, name: str | None) -> FakeServed:
        if name is None:
            return self.models["default"]
        if name not in self.models:
            raise UnknownModel(name, list(self.models))
        return self.models[name]

    def ready(self) -> dict[str, Any]:
        return {"status": "ready", "model_version": 1, "models": {"default": 1, "news": 1}}

    def close(self) -> None:
        """The app's lifespan closes the replica (nothing to send here)."""


@pytest.fixture
def make_app() -> Callable[..., tuple[FastAPI, FakeReplica]]:
    """``make_app(labels=[...], max_labels=..., **settings)``: the real app over a :class:`FakeReplica`."""

    def make(labels: list[str] | None = None, max_labels: int = 1000, **settings: Any) -> tuple[FastAPI, FakeReplica]:
        replica = FakeReplica(ServeSettings(**settings), labels or ["a", "b"])
        for served in replica.models.values():
            served.stream.max_labels = max_labels  # a model's StreamSettings (the learner reads it too)
        return create_app(replica), replica  # type: ignore[arg-type]

    return make
