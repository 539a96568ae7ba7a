"""Authentication on every route, with roles (issue 15, point 1): each test proves one finding."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.settings import ServeSettings
from streaming.errors import ConfigError

ADMIN = "adm-Q7vL2kX9pR4wZ8nB1cT6yH3mJ5sD0fG"  # random-looking, 32+ characters (openssl rand -hex 32)
API = "api-W3eR8tY1uI6oP9aS2dF5gH7jK4lZ0xC"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PREDICT = {"texts": ["hello"]}


def _tokens_file(path, entries):
    path.write_text(json.dumps({name: {"token": t, "roles": r} for name, (t, r) in entries.items()}))
    return path


def test_empty_admin_token_refused():
    """An empty STREAMCL_ADMIN_TOKEN= made `Authorization: Bearer` pass the compare: it now refuses to start."""
    for name in ("admin_token", "api_token", "metrics_token"):
        with pytest.raises(ValidationError, match=f"STREAMCL_{name.upper()} is empty"):
            ServeSettings(**{name: ""})


def test_short_token_refused():
    """A token under 32 characters was accepted: it now refuses to start, naming the setting and not the value."""
    with pytest.raises(ValidationError) as info:
        ServeSettings(api_token="s3cr3t-but-short-Kq9")
    assert "STREAMCL_API_TOKEN" in str(info.value) and "s3cr3t-but-short-Kq9" not in str(info.value)


def test_placeholder_token_refused():
    """Placeholder tokens like `change-me` were accepted: they refuse to start, whatever their length."""
    for placeholder in (
        "change-me",
        "change-me-change-me-change-me-change-me",
        "0" * 64,
        "your-admin-token-goes-here-1234567",
    ):
        with pytest.raises(ValidationError) as info:
            ServeSettings(admin_token=placeholder)
        assert "STREAMCL_ADMIN_TOKEN" in str(info.value) and placeholder not in str(info.value)
    assert ServeSettings(admin_token=ADMIN).admin_token is not None


def test_unknown_model_401_before_404(make_app):
    """An unknown model name answered 404 listing the model names before the token was checked."""
    app, _ = make_app(api_token=API, admin_token=ADMIN)
    c = TestClient(app)
    for method, path in [
        ("POST", "/v1/models/nope/predict"),
        ("POST", "/v1/models/nope/feedback"),
        ("GET", "/v1/models/nope"),
        ("GET", "/v1/models/nope/model/versions"),
        ("POST", "/v1/models/nope/model/promote"),
        ("GET", "/v1/models"),
    ]:
        r = c.request(method, path, content=b"{bad")
        assert r.status_code == 401 and "news" not in r.text, (path, r.text)
        r = c.request(method, path, content=b"{bad", headers=bearer("x" * 40))
        assert r.status_code == 403 and "news" not in r.text, (path, r.text)
    r = c.post("/v1/models/nope/predict", json=PREDICT, headers=bearer(API))
    assert r.status_code == 404  # with the right token, the name is looked up


def test_anonymous_non_loopback_refused():
    """The image binds 0.0.0.0 with no token: a listener off loopback without a token now refuses to start."""
    with pytest.raises(ConfigError, match="STREAMCL_ALLOW_ANONYMOUS"):
        ServeSettings(host="0.0.0.0").check_listener()
    ServeSettings(host="10.1.2.3", admin_token=ADMIN).check_listener()  # admin only: every /v1 call is closed too
    from services.serve_app import build_app

    with pytest.raises(ConfigError):
        build_app([], ServeSettings(host="0.0.0.0"))
    ServeSettings(host="0.0.0.0", allow_anonymous=True).check_listener()
    ServeSettings(host="0.0.0.0", api_token=API).check_listener()
    for host in ("127.0.0.1", "localhost", "::1"):
        ServeSettings(host=host).check_listener()  # the demo and local use stay open


def test_predict_only_token_cannot_feedback(make_app, tmp_path):
    """There was one token for predict and feedback: a predict-only token (tokens file) cannot teach the model."""
    predictor = "prd-M2nB7vC4xZ9lK1jH6gF3dS8aQ5wE0rT"
    tokens = _tokens_file(tmp_path / "tokens.json", {"shop-frontend": (predictor, ["predict"])})
    app, replica = make_app(admin_token=ADMIN, tokens_file=tokens)
    c = TestClient(app)
    assert c.post("/v1/predict", json=PREDICT, headers=bearer(predictor)).status_code == 200
    r = c.post("/v1/feedback", json={"id": "a", "label": "b"}, headers=bearer(predictor))
    assert r.status_code == 403 and predictor not in r.text
    assert c.post("/v1/model/rollback", headers=bearer(predictor)).status_code == 403
    assert c.get("/v1/model", headers=bearer(predictor)).status_code == 200  # every role reads
    assert c.post("/v1/predict", json=PREDICT).status_code == 401  # a data token closes the data calls
    assert c.post("/v1/predict", json=PREDICT, headers=bearer(ADMIN)).status_code == 403  # admin does not predict
    assert [call[0] for call in replica.models["default"].calls] == ["predict"]


def test_tokens_file_rotation(make_app, tmp_path):
    """Tokens could only change with a restart: the tokens file is read again when it changes."""
    old, new = "old-P4oI9uY2tR7eW1qA6sD3fG8hJ5kL0zX", "new-Z8xC3vB6nM1qW9eR4tY7uI2oP5aS0dF"
    tokens = _tokens_file(tmp_path / "tokens.json", {"app": (old, ["predict", "feedback"])})
    app, _ = make_app(tokens_file=tokens)
    c = TestClient(app)
    assert c.post("/v1/predict", json=PREDICT, headers=bearer(old)).status_code == 200
    _tokens_file(tmp_path / "next.json", {"app": (new, ["predict", "feedback"]), "other": (API, ["predict"])})
    os.replace(tmp_path / "next.json", tokens)  # how a mounted Secret changes: a new inode
    assert c.post("/v1/predict", json=PREDICT, headers=bearer(old)).status_code == 403
    assert c.post("/v1/predict", json=PREDICT, headers=bearer(new)).status_code == 200
    tokens.write_text(json.dumps({"app": {"token": "Zq81", "roles": ["predict"]}}))  # a bad file: kept the last
    assert c.post("/v1/predict", json=PREDICT, headers=bearer(new)).status_code == 200
    with pytest.raises(ValidationError, match="token 'app'") as info:
        ServeSettings(tokens_file=tokens)  # at start-up a bad file refuses to start
    assert "Zq81" not in str(info.value)


def test_caller_name_not_token():
    """Nothing told a handler who called: the token's name is known (for an audit trail), never the token."""
    from services._auth import Authenticator

    auth = Authenticator.from_settings(ServeSettings(api_token=API, admin_token=ADMIN))
    assert auth.authenticate(f"Bearer {ADMIN}", "admin") == "admin"
    assert auth.authenticate(f"Bearer {API}", "feedback") == "api"
    assert auth.authenticate(f"Bearer {API}", None) == "api"


def test_metrics_token(tmp_path):
    """The metrics URL was open to anyone who reached it: with STREAMCL_METRICS_TOKEN it needs the token."""
    from services.metrics_server import MetricsAggregator

    token = "mtr-K5jH2gF9dS4aQ7wE1rT6yU3iO8pL0zX"
    aggregator = MetricsAggregator(port=0, token=token)
    try:

        def status(headers: dict[str, str]) -> int:
            try:
                with urllib.request.urlopen(urllib.request.Request(aggregator.url, headers=headers), timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status({}) == 401
        assert status(bearer("y" * 40)) == 403
        assert status(bearer(token)) == 200
    finally:
        aggregator.close()
