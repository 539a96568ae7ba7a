"""The audit trail over HTTP (issue 15, point 5): admin calls reach the controller under the
caller's token name, and erasure goes through the model's own replica call."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

ADMIN = "adm-Q7vL2kX9pR4wZ8nB1cT6yH3mJ5sD0fG"
OPS = "ops-M4nB8vC1xZ6lK3jH9gF2dS7aP0oI5uY"


def test_http_admin_calls_are_audited_under_the_callers_token_name(make_app, tmp_path):
    """Every admin call over HTTP was recorded as "an operator (HTTP)", whoever made it."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"ops-team": {"token": OPS, "roles": ["admin"]}}))
    app, replica = make_app(admin_token=ADMIN, tokens_file=tokens)
    with TestClient(app) as http:
        ops, admin = {"Authorization": f"Bearer {OPS}"}, {"Authorization": f"Bearer {ADMIN}"}
        assert http.post("/v1/model/promote", json={"version": 2}, headers=ops).status_code == 200
        assert http.post("/v1/models/news/model/pin", headers=admin).status_code == 200
        assert http.post("/v1/model/unpin", headers=ops).status_code == 200
        forget = http.post("/v1/forget", json={"ids": ["e1", "e2", "e1"]}, headers=ops)
        assert forget.status_code == 200 and forget.json()["ids"] == 2
        assert http.post("/v1/models/news/forget", json={"ids": ["n1"]}, headers=admin).status_code == 200
    assert replica.models["default"].calls == [
        ("promote", 2, "ops-team"),
        ("unpin", None, "ops-team"),
        ("forget", ["e1", "e2"], "ops-team"),
    ]
    assert replica.models["news"].calls == [("pin", None, "admin"), ("forget", ["n1"], "admin")]


def test_forget_refuses_ids_the_document_refuses(make_app):
    """The forget route's document said less than it checked: ids with control characters,
    an empty list or a body for another model were refused without the schema saying so."""
    app, replica = make_app(admin_token=ADMIN)
    with TestClient(app) as http:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        schema = http.get("/openapi.json").json()
        ref = schema["paths"]["/v1/forget"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        ids = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]["ids"]
        assert ids["minItems"] == 1 and ids["maxItems"] == 1000 and ids["items"]["maxLength"] == 256
        assert "pattern" in ids["items"]
        for body in ({"ids": []}, {"ids": ["a\nb"]}, {"ids": ["x\x00"]}, {"ids": ["a"], "model": "news"}):
            assert http.post("/v1/forget", json=body, headers=admin).status_code == 422, body
    assert replica.models["default"].calls == []
