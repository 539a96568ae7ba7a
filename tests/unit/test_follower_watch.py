"""Pushed swaps: the model controller's long-poll (``wait_serving``) returns the moment the
serving pointer is rewritten, the replica's follower swaps on it without polling, falls back to
polling the registry while the controller cannot answer, and serves the prepared copy."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import services.serving._runtime as runtime
from learners.registry import LocalRegistry, NewVersion
from services._serving_watch import ServingWatch
from services.controller import ModelController
from services.gate import PromoteNewer
from services.metrics import ControllerMetrics
from services.serving import Loaded, ModelFollower


class Pointer:
    """A registry with a serving pointer and models named after their version."""

    def __init__(self) -> None:
        self.pointer = 1
        self.reads = 0
        self.loads: list[int] = []

    def serving(self) -> int:
        self.reads += 1
        return self.pointer

    def serving_state(self) -> SimpleNamespace:
        return SimpleNamespace(history=[])

    def versions(self) -> list[Any]:
        return []

    def load_model(self, version: int) -> str:
        self.loads.append(version)
        return f"model-{version}"


def _until(check, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


@pytest.fixture
def slow_fallback(monkeypatch):
    """Long-polls held for a minute: a swap within the test's wait comes from a notification."""
    monkeypatch.setattr(runtime, "WATCH_S", 60.0)


def test_a_promotion_is_pushed_to_the_follower_without_polling(slow_fallback):
    registry, watch = Pointer(), ServingWatch()
    calls: list[int | None] = []

    def wait(known: int | None, timeout_s: float) -> int | None:
        calls.append(known)
        return watch.wait(registry.serving, known, timeout_s)

    follower = ModelFollower(registry, poll_s=60.0, watch=wait, prepare=lambda m: f"served {m}")  # type: ignore[arg-type,return-value]
    try:
        assert follower.current == Loaded(1, "served model-1")  # type: ignore[arg-type]
        assert _until(lambda: calls[-1:] == [1])  # holding a long-poll on version 1
        registry.pointer = 2
        watch.changed()  # what the controller does after writing the pointer
        assert _until(lambda: follower.current.version == 2)  # type: ignore[union-attr]
        assert follower.current == Loaded(2, "served model-2") and follower.pushed  # type: ignore[arg-type]
        assert registry.loads == [1, 2]
    finally:
        follower.stop()
        watch.changed()


def test_the_registry_is_polled_while_the_controller_cannot_answer_and_pushes_resume(monkeypatch):
    monkeypatch.setattr(runtime, "WATCH_RETRY_S", 0.05)
    registry, watch = Pointer(), ServingWatch()
    down = threading.Event()
    down.set()

    def wait(known: int | None, timeout_s: float) -> int | None:
        if down.is_set():
            raise ConnectionError("the model controller is not there")
        return watch.wait(registry.serving, known, min(timeout_s, 0.05))

    follower = ModelFollower(registry, poll_s=0.01, watch=wait)  # type: ignore[arg-type]
    try:
        assert _until(lambda: not follower.pushed)
        registry.pointer = 2  # nobody notifies: the follower's own poll finds it
        assert _until(lambda: follower.current.version == 2)  # type: ignore[union-attr]
        down.clear()
        assert _until(lambda: follower.pushed)  # long-polling again once the controller answers
        registry.pointer = 3
        watch.changed()
        assert _until(lambda: follower.current.version == 3)  # type: ignore[union-attr]
    finally:
        follower.stop()


def test_the_watch_does_not_miss_a_change_made_while_it_reads_the_pointer():
    watch, values = ServingWatch(), iter([1, 2])

    def read() -> int:
        value = next(values)
        watch.changed()  # the pointer is rewritten while it is read
        return value

    assert watch.wait(read, 1, 30.0) == 2  # returns at once, not after 30 s


class Quiet(ModelController):
    """The controller without Kafka (as tests/unit/test_gate.py builds it)."""

    def __init__(self, registry: LocalRegistry) -> None:
        self.registry, self.gate, self.model, self.decided, self.shadow = registry, PromoteNewer(), "default", 0, None
        self.metrics = ControllerMetrics(CollectorRegistry())
        self._lock = threading.RLock()

    def _announce(self, version: int, status: str, extra: dict[str, Any]) -> None:
        return None


def test_wait_serving_returns_when_an_operator_promotes_or_rolls_back(tmp_path):
    reg = LocalRegistry(tmp_path)
    for status in ("promoted", "candidate", "candidate"):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status=status))
    reg.set_serving(1)
    c = Quiet(reg)
    assert c.wait_serving(None, 30.0) == 1  # differs from what the replica knows: at once
    assert c.wait_serving(1, 0.01) == 1  # nothing changed: after the timeout

    for action, version, expected in (("promote", 3, 3), ("rollback", None, 1)):
        answer: list[int | None] = []
        known = reg.serving()
        waiter = threading.Thread(target=lambda out, k: out.append(c.wait_serving(k, 60.0)), args=(answer, known))
        waiter.start()
        time.sleep(0.05)  # let it wait (had it not started yet, it would return at once: the same answer)
        assert c.admin(action, version)["serving"] == expected
        waiter.join(20)
        assert answer == [expected]
