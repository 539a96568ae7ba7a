"""Bounded inputs (issue 15, point 2): labels, domains, JSON depth and body size, over Kafka and HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from streaming.deadletter import decode_or_dead_letter
from streaming.errors import InvalidEvent
from streaming.events import FeedbackEvent, Record, TextEvent, decode
from streaming.metrics import MetricGroup, sample_value


class _Producer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish(self, topic: str, event: Any, key: str | None = None) -> None:
        self.sent.append((topic, event, key))


def test_huge_label_rejected(make_app):
    """A 1,000,000-character label was accepted (every response then carries it): labels over 128 are refused."""
    for n in (129, 1_000_000):
        with pytest.raises(InvalidEvent) as info:
            decode(FeedbackEvent, json.dumps({"id": "a", "label": "l" * n}).encode(), 100)
        assert info.value.reason == "invalid_label"
    assert decode(FeedbackEvent, json.dumps({"id": "a", "label": "l" * 128}).encode(), 100).label
    app, replica = make_app()
    c = TestClient(app)
    for n in (129, 300):
        r = c.post("/v1/feedback", json={"id": "a", "label": "l" * n})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_label"), r.json()
    app, _ = make_app(max_label_chars=10)
    assert TestClient(app).post("/v1/feedback", json={"id": "a", "label": "l" * 11}).status_code == 422
    assert not replica.models["default"].calls


def test_huge_domain_rejected(make_app):
    """A domain of any length became a Prometheus label value and a held-out slice: over 128 it is refused."""
    with pytest.raises(InvalidEvent):
        decode(TextEvent, json.dumps({"id": "a", "text": "t", "domain": "d" * 129}).encode(), 100)
    app, replica = make_app()
    r = TestClient(app).post("/v1/predict", json={"texts": ["hi"], "domains": ["d" * 129]})
    assert r.status_code == 422 and not replica.models["default"].calls


def test_label_count_limit_http_422(make_app):
    """Every new label added a row to the head: feedback that would grow a model past STREAMCL_MAX_LABELS is refused."""
    app, replica = make_app(labels=["a", "b", "c"], max_labels=4)
    c = TestClient(app)
    assert c.post("/v1/feedback", json=[{"id": "1", "label": "a"}, {"id": "2", "label": "d"}]).status_code == 202
    r = c.post("/v1/feedback", json=[{"id": "3", "label": "e"}, {"id": "4", "label": "f"}])
    assert (r.status_code, r.json()["error"]) == (422, "label_limit")
    assert replica.models["default"].calls == [("feedback", ["a", "d"])]


def test_deep_json_goes_to_dlq():
    """JSON nested ~2,000 deep raised RecursionError out of decode (a consumer lost its batch): it is dead-lettered."""
    metrics, producer = MetricGroup(CollectorRegistry()), _Producer()
    deep = b'{"id": "a", "text": "t", "meta": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    records = [
        Record("t.texts", 0, 1, b"a", deep),
        Record("t.texts", 0, 2, b"b", b"[" * 100_000 + b"]" * 100_000),
        Record("t.texts", 0, 3, b"c", TextEvent(id="c", text="good").to_bytes()),
    ]
    out = [decode_or_dead_letter(TextEvent, r, 100, producer, "t.dlq", metrics) for r in records]
    assert out[:2] == [None, None] and out[2] is not None and out[2].text == "good"
    assert [(e.reason, e.offset) for _, e, _ in producer.sent] == [("invalid_json", 1), ("invalid_json", 2)]
    assert all("nested deeper" in e.error for _, e, _ in producer.sent)
    assert sample_value(metrics.exposition(), "streamcl_dlq_events_total", {"reason": "invalid_json"}) == 2


def test_deep_json_http_400(make_app):
    """Nesting in a field the schema ignores was parsed without a bound: a body deeper than 32 levels is a 400."""
    app, replica = make_app()
    c = TestClient(app)
    nested = "[" * 40 + "]" * 40
    for path in ("/v1/predict", "/v1/feedback"):
        body = f'{{"texts": ["hi"], "id": "a", "label": "a", "x": {nested}}}'
        r = c.post(path, content=body.encode())
        assert (r.status_code, r.json()["error"]) == (400, "invalid_json"), r.json()
    assert c.post("/v1/predict", content=b"[" * 5000 + b"]" * 5000).status_code == 400
    assert not replica.models["default"].calls


def test_chunked_body_over_cap_413(make_app):
    """A chunked body was read whole before the 8 MiB check: it is refused with 413 as soon as it passes the cap."""
    cap, chunk, total = 64 * 1024, 8 * 1024, 1024
    app, _ = make_app(max_request_bytes=cap)
    sent, messages = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": b" " * chunk, "more_body": sent < total}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/predict", "raw_path": b"/v1/predict", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("test", 80), "state": {},
    }  # fmt: skip

    async def lifespan_free_call() -> None:
        await app(scope, receive, send)

    asyncio.run(lifespan_free_call())
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert start["status"] == 413 and json.loads(body)["error"] == "request_too_large"
    assert sent <= cap // chunk + 1  # stopped reading right past the cap, not after 8 MiB


def test_domain_cap_folds_to_other():
    """Every domain became a Prometheus label value, a window and a held-out slice: past 100 they fold into other."""
    from streaming.events import OTHER_DOMAIN, DomainCap

    cap = DomainCap(max_domains=3, known=["kept"])
    assert [cap.fold(d) for d in ["a", "b", "c", "a", None, "kept"]] == ["a", "b", OTHER_DOMAIN, "a", None, "kept"]
    one = DomainCap()
    assert len({one.fold(f"d{i}") for i in range(10_000)}) == 101  # 100 domains and other
