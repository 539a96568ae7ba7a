"""``streamcl forget`` and ``Client.forget`` (issue 15, point 4): the admin token, the model's
path and the ids reach ``POST /v1/forget``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from services._cli_audit import cmd_forget
from services.client import ApiCallError, Client

ADMIN = "adm-Z8xC3vB6nM1qW4eR7tY0uI2oP5aS9dF"


@pytest.fixture
def api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server that records each call and answers as the forget route does."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            ok = self.headers.get("Authorization") == f"Bearer {ADMIN}"
            out = {"ids": len(body["ids"]), "trained_in": {"versions": [3]}} if ok else {"error": "forbidden"}
            raw = json.dumps(out).encode()
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_client_forget_posts_the_ids_with_the_admin_token(api):
    """Erasure had no client call: the CLI reached into the client's private transport."""
    url, seen = api
    assert Client(url, admin_token=ADMIN).forget(["a", "b"])["trained_in"] == {"versions": [3]}
    Client(url, admin_token=ADMIN).forget(["c"], model="news")
    Client(url, admin_token=ADMIN, model="news").forget(["d"])
    with pytest.raises(ApiCallError) as refused:
        Client(url, api_token=ADMIN).forget(["e"])  # an API token is never sent as the admin one
    assert refused.value.status == 403
    assert [(s["path"], s["body"]) for s in seen[:3]] == [
        ("/v1/forget", {"ids": ["a", "b"]}),
        ("/v1/models/news/forget", {"ids": ["c"]}),
        ("/v1/models/news/forget", {"ids": ["d"]}),
    ]
    assert seen[0]["auth"] == f"Bearer {ADMIN}" and seen[3]["auth"] is None


def test_streamcl_forget_sends_the_admin_token_from_the_environment(api, monkeypatch, capsys):
    """`streamcl forget ID… [--model NAME]` erases over HTTP with STREAMCL_ADMIN_TOKEN."""
    url, seen = api
    args = SimpleNamespace(ids=["x1", "x2"], model="news", url=url)
    monkeypatch.delenv("STREAMCL_ADMIN_TOKEN", raising=False)
    assert cmd_forget(args) == 2 and "STREAMCL_ADMIN_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("STREAMCL_ADMIN_TOKEN", ADMIN)
    assert cmd_forget(args) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == 2
    assert seen == [{"path": "/v1/models/news/forget", "auth": f"Bearer {ADMIN}", "body": {"ids": ["x1", "x2"]}}]
