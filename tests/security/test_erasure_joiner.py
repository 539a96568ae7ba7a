"""Erasure in the joiner over a real broker (issue 15, point 4): pending texts leave the live
join state and the checkpoint on disk."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from streaming.events import FeedbackEvent, TextEvent
from streaming.joiner import JoinerMetrics, JoinerService
from streaming.kafka import Producer

pytestmark = pytest.mark.integration


def _run_until(joiner: JoinerService, done, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, joiner.status()
        joiner.step(0.2)


def test_forget_drops_pending_texts_from_the_joiner_and_its_checkpoint(make_settings):
    """The joiner kept a forgotten id's pending text in memory and in its checkpoint file."""
    s = make_settings(join_ttl_s=3600.0)
    p = Producer(s)
    for i in range(4):
        p.publish(s.topics.texts, TextEvent(id=f"e{i}", text=f"secret text of person {i}"))
    p.flush()
    joiner = JoinerService(s, JoinerMetrics(CollectorRegistry()))
    _run_until(joiner, lambda: joiner.counts["consumed"] >= 4)
    joiner.checkpoint()
    p.publish(s.topics.texts, TextEvent(id="e4", text="secret text of person 4"))  # pending, not saved yet
    p.flush()
    _run_until(joiner, lambda: joiner.counts["consumed"] >= 5)
    assert "secret text of person 0" in joiner.checkpoint_path.read_text()

    stop, answers = threading.Event(), []

    def loop() -> None:  # the service host's loop: the erasure waits for the step in progress
        while not stop.is_set():
            joiner.step(0.1)

    stepping = threading.Thread(target=loop)
    stepping.start()
    try:
        answers.append(joiner.forget(["e0", "e4", "never-seen"]))
    finally:
        stop.set()
        stepping.join()
    assert answers == [{"shard": [0, 1], "pending_dropped": 2}]
    saved = joiner.checkpoint_path.read_text()
    assert "person 0" not in saved and "person 1" in saved  # rewritten at once, the others kept
    assert joiner.status()["pending"]["text"] == 3

    for id_ in ("e0", "e1"):
        p.publish(s.topics.feedback, FeedbackEvent(id=id_, label="pos"))
    p.flush()
    p.close()
    _run_until(joiner, lambda: joiner.counts["consumed"] >= 7)
    assert joiner.counts["joined"] == 1  # e1 only: e0's text is gone
    joiner.close()
    assert "person 0" not in joiner.checkpoint_path.read_text()
    assert "person 4" not in joiner.checkpoint_path.read_text()
