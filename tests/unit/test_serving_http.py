"""The HTTP layer alone, over a fake replica: the order of checks (model, token, size, JSON,
schema), the error bodies and statuses, and an OpenAPI document generated from the models
with the limits of the settings. The real endpoint is tested in tests/integration/test_serving.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.metrics import ServeMetrics
from services.serving import (
    AdminRefused,
    EventLog,
    NotAcknowledged,
    NotReady,
    Overloaded,
    UnknownModel,
    create_app,
    status_of,
)
from services.settings import ServeSettings
from streaming.settings import StreamSettings

ADMIN = "adm-9f4Kq2LzR7wX1mB8nC3vD6tY0pH5sJ"  # tokens are random and at least 32 characters
API = "api-3hG7kP1qW9zL5xN2mR8vB4tC6yD0fJ"


class FakeServed:
    """What the HTTP layer uses of a model: it answers without a model, Kafka or Ray."""

    def __init__(self, name: str, max_chars: int = 50) -> None:
        self.name = name
        self.stream = SimpleNamespace(max_text_chars=max_chars, max_labels=1000)
        self.metrics = ServeMetrics(CollectorRegistry())
        self.calls: list[Any] = []
        self.ready = True
        self.full = False
        self.events: Any = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": True,
            "path": "/v1",
            "topic_prefix": "t",
            "replica_version": 1,
            "labels": [],
        }

    async def predict(self, texts: list[str], ids: Any, domains: Any) -> dict[str, Any]:
        if not self.ready:
            raise NotReady("no model loaded yet")
        self.calls.append(("predict", texts, ids, domains))
        ids = ids or [f"id{i}" for i in range(len(texts))]
        preds = [{"id": i, "label": "a", "scores": {"a": 1.0}} for i in ids]
        return {"model": self.name, "model_version": 1, "predictions": preds}

    async def feedback(self, events: list[Any]) -> int:
        if self.full:
            raise Overloaded("full")
        if self.events is not None:  # the real event log, over a producer the test controls
            await self.events.publish_acked("feedback", events, timeout_s=0.2)
        self.calls.append(("feedback", events))
        return len(events)

    async def info(self) -> dict[str, Any]:
        return {"model": self.name, "serving": None, "candidate": None, "replica_version": 1, "labels": ["a"]}

    async def versions(self) -> dict[str, Any]:
        version = {"version": 1, "uri": "file:///r/1", "status": "promoted", "parent": None, "offsets": {}}
        return {"model": self.name, "serving": 1, "versions": [{**version, "serving": True}]}

    async def admin(self, action: str, version: int | None, who: str = "operator") -> dict[str, Any]:
        self.calls.append((action, version))
        if version == 999:
            raise AdminRefused(404, "unknown_version", "there is no version 999")
        return {"serving": version or 1, "pinned": action == "pin", "history": []}


class FakeReplica:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.models = {"default": FakeServed("default"), "news": FakeServed("news", max_chars=20)}
        self.default = self.models["default"]

    def served(self, name: str | None) -> Any:
        if name is None:
            return self.default
        if name not in self.models:
            raise UnknownModel(name, list(self.models))
        return self.models[name]

    def ready(self) -> dict[str, Any]:
        return {"status": "ready", "model_version": 1, "models": {"default": 1, "news": 1}}


def client(auth: bool = True, **settings: Any) -> tuple[TestClient, FakeReplica]:
    """A client of the app over a :class:`FakeReplica`; ``auth``: it sends the API token (any
    token set closes every /v1 call)."""
    defaults: dict[str, Any] = {
        "admin_token": ADMIN,
        "api_token": API,
        "max_texts_per_request": 4,
        "max_request_bytes": 2048,
    }
    replica = FakeReplica(ServeSettings(**{**defaults, **settings}))
    return TestClient(create_app(replica), headers=DATA if auth else None), replica  # type: ignore[arg-type]


AUTH = {"Authorization": f"Bearer {ADMIN}"}
DATA = {"Authorization": f"Bearer {API}"}


def test_predict_answers_and_counts():
    c, replica = client()
    r = c.post("/v1/predict", json={"texts": ["hi", "there"], "domains": ["x", None]})
    assert r.status_code == 200 and r.json()["model_version"] == 1
    assert replica.default.calls == [("predict", ["hi", "there"], None, ["x", None])]
    assert replica.default.metrics.requests.labels("200")._value.get() == 1
    assert c.post("/v1/predict", json={"texts": []}).status_code == 422
    assert replica.default.metrics.requests.labels("422")._value.get() == 1


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"texts": "\xff\xfe"}', 400, "invalid_utf8"),
        (b"", 400, "invalid_json"),
        (b"x" * 3000, 413, "request_too_large"),
        (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "too_many_texts"),
        (b'{"texts": ["' + b"x" * 51 + b'"]}', 413, "text_too_long"),
        (b'{"texts": [" \\t"]}', 422, "empty_text"),
        (b'{"texts": [1, 2]}', 422, "invalid_request"),
        (b'{"texts": ["a"], "ids": ["x", "y"]}', 422, "invalid_request"),
        (b'{"texts": ["a"], "ids": [""]}', 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
        (b"{}", 422, "invalid_request"),
    ],
)
def test_bad_predict_bodies_get_an_error_body_whatever_the_content_type(body, status, error):
    c, _ = client()
    for content_type in ("application/json", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        r = c.post("/v1/predict", content=body, headers=headers)
        assert (r.status_code, r.json()["error"]) == (status, error), (content_type, r.json())
        assert set(r.json()) == {"error", "detail"}


def test_a_named_model_has_its_own_limit_and_an_unknown_one_is_a_404():
    c, replica = client()
    assert c.post("/v1/models/news/predict", json={"texts": ["x" * 21]}).status_code == 413
    assert c.post("/v1/models/news/predict", json={"texts": ["x" * 20]}).status_code == 200
    assert replica.models["news"].calls and not replica.default.calls
    r = c.post("/v1/models/nope/predict", content=b"{not json")
    assert r.status_code == 404 and r.json()["error"] == "unknown_model"
    assert c.get("/v1/models/news").json()["model"] == "news"
    assert c.get("/v1/models/news/model/versions").json()["versions"][0]["serving"] is True


def test_feedback_one_or_many():
    c, replica = client()
    assert c.post("/v1/feedback", json={"id": "a", "label": "x", "extra": 1}).json() == {"accepted": 1}
    assert (
        c.post("/v1/feedback", json=[{"id": "a", "label": "x"}, {"id": "b", "label": "y", "ts": 3}]).status_code == 202
    )
    assert c.post("/v1/feedback", json=[{"id": "a", "label": "x"}] * 5).json()["error"] == "too_many_items"
    assert c.post("/v1/feedback", json={"id": "", "label": "x"}).status_code == 422
    assert c.post("/v1/feedback", json={"id": "a", "label": " "}).json()["error"] == "invalid_label"
    # a bad item is named as the events' decoder names it, with its position
    r = c.post("/v1/feedback", json=[{"id": "a", "label": "x"}, {"id": 1, "label": "x"}]).json()
    assert r["error"] == "wrong_type" and r["detail"].startswith("item 1: ")
    assert c.post("/v1/feedback", json={"label": "x"}).json()["error"] == "missing_field"
    assert c.post("/v1/feedback", json={"id": "a", "label": "x", "ts": "now"}).json()["error"] == "wrong_type"
    assert c.post("/v1/feedback", json=[]).status_code == 422
    replica.default.full = True
    r = c.post("/v1/feedback", json={"id": "a", "label": "x"})
    assert r.status_code == 503 and r.json()["error"] == "overloaded" and r.headers["retry-after"] == "1"


class UnackedProducer:
    """A producer whose sends the broker never acknowledges (a paused broker)."""

    def publish(self, topic: str, event: Any) -> Any:
        from kafka.future import Future

        return Future()


def test_feedback_not_acknowledged_by_kafka_in_time_is_a_503_with_retry_after():
    c, replica = client()
    replica.default.events = EventLog(StreamSettings(kafka_bootstrap="127.0.0.1:1"))
    replica.default.events._producer = UnackedProducer()
    r = c.post("/v1/feedback", json=[{"id": "a", "label": "x"}, {"id": "b", "label": "y"}])
    assert r.status_code == 503 and r.json()["error"] == "not_acknowledged", r.json()
    assert int(r.headers["retry-after"]) >= 1 and set(r.json()) == {"error", "detail"}
    assert not replica.default.calls  # nothing accepted
    doc = c.get("/openapi.json").json()
    assert "503" in doc["paths"]["/v1/feedback"]["post"]["responses"]


@pytest.mark.parametrize("depth", [2_000, 100_000, 900])
@pytest.mark.parametrize("path", ["/v1/predict", "/v1/feedback", "/v1/models/news/feedback"])
def test_deeply_nested_json_is_a_client_error(path, depth):
    c, _ = client(max_request_bytes=1024 * 1024)
    for body in (b"[" * depth + b"]" * depth, b'{"texts": ' + b"[" * depth + b"]" * depth + b"}"):
        r = c.post(path, content=body)
        assert r.status_code in (400, 422) and set(r.json()) == {"error", "detail"}, r.json()
        assert depth < 1000 or r.json()["error"] == "invalid_json"


def test_admin_checks_the_token_before_the_body():
    c, replica = client(auth=False)
    assert c.post("/v1/model/rollback", content=b"{bad").status_code == 401
    assert c.post("/v1/model/rollback", content=b"{bad", headers={"Authorization": "Bearer no"}).status_code == 403
    assert c.post("/v1/model/rollback", content=b"{bad", headers=AUTH).status_code == 400
    assert c.post("/v1/model/rollback", headers=AUTH).json()["serving"] == 1
    assert c.post("/v1/model/pin", content=b"  ", headers=AUTH).status_code == 200
    assert c.post("/v1/model/promote", json={"version": "2"}, headers=AUTH).status_code == 422
    assert c.post("/v1/model/promote", json={"version": True}, headers=AUTH).status_code == 422
    assert c.post("/v1/model/promote", json={}, headers=AUTH).status_code == 422
    assert c.post("/v1/model/promote", headers=AUTH).status_code == 422
    assert c.post("/v1/model/promote", json={"version": 999}, headers=AUTH).status_code == 404
    assert c.post("/v1/model/promote", json={"version": 3.0}, headers=AUTH).status_code == 200  # an integer
    assert c.post("/v1/model/promote", json={"version": 0}, headers=AUTH).status_code == 422
    assert c.post("/v1/models/news/model/promote", json={"version": 2}, headers=AUTH).status_code == 200
    assert c.post("/v1/model/unpin", content=b"ignored", headers=AUTH).status_code == 200
    assert replica.models["news"].calls == [("promote", 2)]
    assert ("rollback", None) in replica.default.calls and ("unpin", None) in replica.default.calls
    c, _ = client(admin_token=None)
    assert c.post("/v1/model/unpin", headers=AUTH).json()["error"] == "admin_disabled"


def test_the_api_token_guards_every_v1_call_but_health():
    c, _ = client(auth=False)
    assert c.post("/v1/predict", json={"texts": ["a"]}).status_code == 401
    assert c.get("/v1/models").status_code == 401
    assert c.post("/v1/predict", json={"texts": ["a"]}, headers={"Authorization": f"Bearer {API}"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    doc = c.get("/openapi.json").json()
    assert "401" in doc["paths"]["/v1/predict"]["post"]["responses"]
    assert doc["paths"]["/v1/predict"]["post"]["security"]


def test_the_document_is_generated_with_the_limits_and_one_error_schema():
    c, _ = client(auth=False, admin_token=None, api_token=None)  # no token: predict stays open on loopback
    doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    texts = schemas["PredictRequest"]["properties"]["texts"]
    assert (texts["maxItems"], texts["items"]["maxLength"]) == (4, 50)
    assert schemas["PromoteRequest"]["required"] == ["version"]
    assert schemas["FeedbackItem"]["properties"]["id"]["minLength"] == 1
    assert "files" not in schemas["PublicVersion"]["properties"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (path, method, status)
    assert "security" not in doc["paths"]["/v1/predict"]["post"]
    assert doc["paths"]["/v1/model/promote"]["post"]["security"]
    named = doc["paths"]["/v1/models/{name}/predict"]["post"]
    assert [p["name"] for p in named["parameters"]] == ["name"] and "404" in named["responses"]


def test_domain_errors_map_to_statuses():
    assert status_of(NotReady("x")) == 503 and status_of(Overloaded("x")) == 503
    assert status_of(NotAcknowledged("x")) == 503
    assert status_of(UnknownModel("a", [])) == 404 and status_of(AdminRefused(409, "e", "d")) == 409
