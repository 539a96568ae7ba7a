"""The learner's micro-batch: what has arrived after a short wait, at most the batch size."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from learners.service import LearnerService


class TrickleConsumer:
    """Hands out one record per poll, every ``every_s`` seconds (a slow stream of feedback)."""

    def __init__(self, n: int, every_s: float) -> None:
        self.left, self.every_s, self.polls = n, every_s, 0

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Any]:
        self.polls += 1
        if not self.left:
            time.sleep(timeout_s)
            return []
        time.sleep(min(self.every_s, timeout_s))
        if self.every_s > timeout_s:
            return []
        self.left -= 1
        return [object()]


def gather(consumer: TrickleConsumer, batch_size: int, wait_ms: int, most: int | None = None) -> list[Any]:
    fake = SimpleNamespace(_consumer=consumer, settings=SimpleNamespace(batch_size=batch_size, batch_wait_ms=wait_ms))
    return LearnerService._gather(fake, 0.5, most or batch_size)  # type: ignore[arg-type]


def test_waits_for_more_after_the_first_record() -> None:
    consumer = TrickleConsumer(100, every_s=0.01)
    assert len(gather(consumer, batch_size=8, wait_ms=5_000)) == 8  # full before the wait ends


def test_trains_what_arrived_when_the_wait_ends() -> None:
    consumer = TrickleConsumer(3, every_s=0.01)
    records = gather(consumer, batch_size=16, wait_ms=200)
    assert len(records) == 3  # not a full batch: what arrived within the wait


def test_no_wait_takes_one_poll() -> None:
    consumer = TrickleConsumer(100, every_s=0.01)
    assert len(gather(consumer, batch_size=16, wait_ms=0)) == 1
    assert consumer.polls == 1


def test_nothing_arrived_returns_nothing_after_one_poll() -> None:
    consumer = TrickleConsumer(0, every_s=0.01)
    assert gather(consumer, batch_size=16, wait_ms=1_000) == []
    assert consumer.polls == 1
