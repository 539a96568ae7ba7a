"""A small Python client for applications: the HTTP API, and Kafka helpers for applications
that publish texts and feedback straight to the topics.

    from services.client import Client

    api = Client("http://127.0.0.1:8000", api_token=None, admin_token="…")
    out = api.predict(["the flight was late again"])
    api.feedback(out["predictions"][0]["id"], "negative")
    api.rollback()                          # admin: back to the previous serving version
    api.forget(["id-1", "id-2"])            # admin: erase the texts of these example ids
    news = Client("http://127.0.0.1:8000", model="news")   # a named model: /v1/models/news/...

Errors come back as :class:`ApiCallError` with the HTTP status and the API's error code.
Only the standard library is used on the HTTP side.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from streaming.events import FeedbackEvent, TextEvent
from streaming.settings import StreamSettings

#: Seconds :meth:`Client.forget` waits: the controller gives the learner 300 s to write a version.
FORGET_WAIT_S = 360.0


class ApiCallError(Exception):
    """A call the API answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class Client:
    """The streamcl HTTP API (tokens: ``STREAMCL_API_TOKEN`` and ``STREAMCL_ADMIN_TOKEN`` values)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_token: str | None = None,
        admin_token: str | None = None,
        timeout_s: float = 30.0,
        model: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_token = api_token
        self.admin_token = admin_token
        self.timeout_s = timeout_s
        self.model_name = model
        # the default model's calls are /v1/..., a named model's /v1/models/{name}/...
        self._prefix = "/v1" if model is None else f"/v1/models/{urllib.parse.quote(model, safe='')}"

    # calls ------------------------------------------------------------------------------------
    def predict(
        self, texts: Sequence[str], ids: Sequence[str] | None = None, domains: Sequence[str | None] | None = None
    ) -> dict[str, Any]:
        """``{"model_version", "predictions": [{"id", "label", "scores"}]}``."""
        body: dict[str, Any] = {"texts": list(texts)}
        if ids is not None:
            body["ids"] = list(ids)
        if domains is not None:
            body["domains"] = list(domains)
        return self._call("POST", self._prefix + "/predict", body)

    def feedback(self, id: str | Iterable[tuple[str, str]], label: str | None = None) -> dict[str, Any]:
        """One ``(id, label)`` or many: ``feedback([(id, label), …])``."""
        if isinstance(id, str):
            body: Any = {"id": id, "label": label}
        else:
            body = [{"id": i, "label": y} for i, y in id]
        return self._call("POST", self._prefix + "/feedback", body)

    def model(self) -> dict[str, Any]:
        return self._call("GET", self._prefix + "/model", read=True)

    def models(self) -> list[dict[str, Any]]:
        """Every model of the deployment: name, path, labels, the version this replica serves."""
        return list(self._call("GET", "/v1/models", read=True)["models"])

    def versions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", self._prefix + "/model/versions", read=True)["versions"])

    def promote(self, version: int) -> dict[str, Any]:
        return self._call("POST", self._prefix + "/model/promote", {"version": version}, admin=True)

    def rollback(self, version: int | None = None) -> dict[str, Any]:
        body = {} if version is None else {"version": version}
        return self._call("POST", self._prefix + "/model/rollback", body, admin=True)

    def pin(self, version: int | None = None) -> dict[str, Any]:
        body = {} if version is None else {"version": version}
        return self._call("POST", self._prefix + "/model/pin", body, admin=True)

    def unpin(self) -> dict[str, Any]:
        return self._call("POST", self._prefix + "/model/unpin", None, admin=True)

    def forget(self, ids: Sequence[str], model: str | None = None, timeout_s: float = FORGET_WAIT_S) -> dict[str, Any]:
        """Admin: erase the texts of ``ids`` (of ``model``, default: this client's); the answer
        says which versions trained on them. The learner writes a version: it may take minutes."""
        prefix = self._prefix if model is None else f"/v1/models/{urllib.parse.quote(model, safe='')}"
        return self._call("POST", prefix + "/forget", {"ids": list(ids)}, admin=True, timeout_s=timeout_s)

    # transport --------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        admin: bool = False,
        read: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """``read``: a call any role may make, so an operator with the admin token alone lists versions."""
        token = self.admin_token if admin else (self.api_token or self.admin_token) if read else self.api_token
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                raise ApiCallError(exc.code, err.get("error", "error"), err.get("detail")) from None
            except (ValueError, AttributeError):
                raise ApiCallError(exc.code, "http_error", raw[:200].decode("utf-8", "replace")) from None
        except OSError as exc:
            raise ApiCallError(0, "unreachable", f"{self.url}: {exc}") from None


class KafkaClient:
    """Publishes TextEvents and FeedbackEvents straight to the topics (for applications that
    already speak Kafka); the joiner pairs them by id as it does for the HTTP API's. For a
    named model, pass settings with its topic prefix (``<prefix>.<name>`` by default)."""

    def __init__(self, settings: StreamSettings | None = None, client_id: str = "streamcl-app") -> None:
        from streaming.kafka import Producer

        self.settings = settings or StreamSettings()
        self._producer = Producer(self.settings, client_id=client_id)

    def text(self, id: str, text: str, domain: str | None = None) -> None:
        self._producer.publish(self.settings.topics.texts, TextEvent(id=id, text=text, domain=domain), key=id)

    def feedback(self, id: str, label: str) -> None:
        self._producer.publish(self.settings.topics.feedback, FeedbackEvent(id=id, label=label), key=id)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> KafkaClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
