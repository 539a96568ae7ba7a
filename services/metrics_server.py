"""One scrape URL for the whole platform: the aggregator receives every process's metrics and
serves their merge (``streaming.metrics.merge_expositions``) at ``/metrics``, behind a bearer
token when ``STREAMCL_METRICS_TOKEN`` is set (the PodMonitor sends it)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from services._auth import bearer_matches
from services.metrics import all_metrics
from streaming.metrics import merge_expositions

#: A source silent for longer than this no longer contributes gauges (its counters stay).
STALE_S = 30.0
UP = "streamcl_component_up"


def defaults_exposition() -> str:
    """Every component's metrics at their start values, to fill series no process has sent yet."""
    registry = CollectorRegistry()
    all_metrics(registry)
    return prometheus_client.generate_latest(registry).decode("utf-8")


def down(exposition: str) -> str:
    """The ``streamcl_component_up`` series of a silent source, at 0: a component whose process
    died and was not restarted reads as down rather than vanishing from the scrape."""
    lines = [f"# TYPE {UP} gauge"]
    for family in text_string_to_metric_families(exposition):
        if family.name == UP:
            for sample in family.samples:
                labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sample.labels.items())
                lines.append(f"{UP}{{{labels}}} 0")
    return "\n".join(lines) + "\n"


class MetricsAggregator:
    """Latest exposition per source; merged on scrape. Run as a named Ray actor."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9108, models: list[str] | None = None, token: str | None = None
    ) -> None:
        self._defaults = defaults_exposition()  # every family exists at 0, per model
        self._models = list(models or ["default"])
        self._latest: dict[str, tuple[float, str, dict[str, str]]] = {}
        self._lock = threading.Lock()
        aggregator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if token is not None:
                    header = self.headers.get("Authorization", "")
                    if not bearer_matches(header, token):
                        self.send_error(403 if header else 401, "a wrong token" if header else "Bearer token required")
                        return
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                body = aggregator.render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True).start()
        self.url = f"http://{host}:{self._server.server_address[1]}/metrics"

    def push(self, source: str, exposition: str, labels: dict[str, str] | None = None) -> None:
        """The latest exposition of ``source``; ``labels`` (its model) go on all its series."""
        with self._lock:
            self._latest[source] = (time.time(), exposition, dict(labels or {}))
            model = (labels or {}).get("model")
            if model and model not in self._models:
                self._models.append(model)

    def render(self) -> str:
        with self._lock:
            latest = sorted(self._latest.values(), key=lambda x: x[0])
            models = list(self._models)
        now = time.time()
        fresh = [(text, labels) for ts, text, labels in latest if now - ts <= STALE_S]
        stale = [(text, labels) for ts, text, labels in latest if now - ts > STALE_S]
        fresh += [(down(text), labels) for text, labels in stale]
        return merge_expositions(
            fresh, counters_only=stale, defaults=self._defaults, default_labels=[{"model": m} for m in models]
        )

    def sources(self) -> dict[str, float]:
        with self._lock:
            return {k: ts for k, (ts, _, _) in self._latest.items()}

    def address(self) -> str:
        return self.url

    def close(self) -> None:
        self._server.shutdown()
