"""Publish a labeled data file as live traffic: TextEvents now, FeedbackEvents after a delay."""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streaming.datasets import Row, load_rows
from streaming.events import FeedbackEvent, TextEvent
from streaming.kafka import Producer
from streaming.settings import StreamSettings


@dataclass(frozen=True, slots=True)
class ReplayReport:
    texts: int
    feedback: int
    seconds: float


def row_id(source: str, index: int, row: Row) -> str:
    """A stable id for a row of a file (same file, same ids)."""
    digest = hashlib.blake2b(f"{source}\0{index}\0{row.text}".encode(), digest_size=10).hexdigest()
    return f"r-{digest}"


def replay(
    settings: StreamSettings,
    rows: Sequence[Row],
    source: str = "replay",
    rate: float | None = None,
    label_delay_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Send ``rows`` as TextEvents at ``rate`` per second (None: as fast as possible) and each
    label as a FeedbackEvent ``label_delay_s`` later."""
    topics = settings.topics
    producer = Producer(settings, client_id="streamcl-replay")
    started = time.monotonic()
    pending: list[tuple[float, int, FeedbackEvent]] = []
    sent_fb = 0

    def flush_feedback(until: float) -> None:
        nonlocal sent_fb
        while pending and pending[0][0] <= until:
            _, _, fb = heapq.heappop(pending)
            producer.publish(topics.feedback, fb)
            sent_fb += 1

    try:
        for i, row in enumerate(rows):
            if rate:
                wait = started + i / rate - time.monotonic()
                if wait > 0:
                    flush_feedback(time.monotonic() + wait)
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
            id_ = row_id(source, i, row)
            producer.publish(
                topics.texts, TextEvent(id=id_, text=row.text, domain=row.domain, ts=row.ts or time.time())
            )
            heapq.heappush(pending, (time.monotonic() + label_delay_s, i, FeedbackEvent(id=id_, label=row.label)))
            flush_feedback(time.monotonic())
            if progress and i % 100 == 0:
                progress(i + 1, sent_fb)
        while pending:
            time.sleep(max(0.0, min(0.5, pending[0][0] - time.monotonic())))
            flush_feedback(time.monotonic())
        producer.flush()
    finally:
        producer.close()
    return ReplayReport(len(rows), sent_fb, time.monotonic() - started)


def replay_file(settings: StreamSettings, path: str, **kwargs: object) -> ReplayReport:
    return replay(settings, load_rows(path), source=str(path), **kwargs)  # type: ignore[arg-type]
