"""A corrupt or lost serving pointer: recovered from its copy, else rebuilt from the versions
with the floor at the newest one; the controller rewrites it, counts it, and never promotes a
stored candidate because of it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from learners.registry import LocalRegistry, NewVersion, ServingState
from learners.versioning import bootstrap_registry
from services.controller import ModelController
from services.gate import PromoteNewer
from services.metrics import ControllerMetrics
from streaming.errors import RegistryError

POINTER, COPY = "serving.json", "serving.prev.json"


def _registry(tmp_path: Path, *statuses: str) -> LocalRegistry:
    """The start-up version serving, then versions a learner wrote (each with its parent)."""
    reg = LocalRegistry(tmp_path)
    for i, status in enumerate(statuses):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status=status, parent=i or None))
        if i == 0:
            reg.set_serving(1)
    return reg


class Quiet(ModelController):
    """The controller without Kafka: announcements are recorded."""

    def __init__(self, registry: LocalRegistry) -> None:
        self.registry, self.gate, self.model, self.decided, self.shadow = registry, PromoteNewer(), "default", 0, None
        self.metrics = ControllerMetrics(CollectorRegistry())
        self.announced: list[tuple[int, str]] = []
        self._lock = threading.RLock()

    def _announce(self, version: int, status: str, extra: dict[str, Any]) -> None:
        self.announced.append((version, status))

    def recoveries(self, source: str) -> float:
        return self.metrics.pointer_recoveries.labels(source)._value.get()


def test_a_fresh_registry_has_nothing_serving_and_no_problem(tmp_path):
    reg = LocalRegistry(tmp_path)
    reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status="promoted"))
    read = reg.read_serving()  # the start-up version, before its pointer is written
    assert read.state == ServingState() and read.problem is None
    assert reg.repair_serving().problem is None and not (tmp_path / POINTER).exists()
    reg.set_serving(1)
    assert (tmp_path / COPY).read_bytes() == (tmp_path / POINTER).read_bytes()


def test_a_corrupt_pointer_is_recovered_from_its_copy_with_pin_floor_and_history(tmp_path):
    reg = _registry(tmp_path, "promoted", "promoted", "candidate")
    reg.set_serving(2, pinned=True, floor=2)
    (tmp_path / POINTER).write_bytes(b'{"version": 2, "pinn')  # half written
    read = reg.read_serving()
    assert (read.problem, read.source) == ("corrupt", "backup")
    assert read.state.version == 2 and read.state.pinned and read.state.floor == 2 and read.state.history == [1]
    assert reg.serving_state() == read.state
    assert reg.repair_serving().problem == "corrupt"
    assert reg.read_serving().problem is None and reg.serving_state() == read.state


@pytest.mark.parametrize("damage", ["corrupt", "missing", "no version"])
def test_without_a_copy_the_pointer_is_rebuilt_with_everything_stored_under_the_floor(tmp_path, damage):
    reg = _registry(tmp_path, "promoted", "rolled_back", "promoted", "candidate", "candidate")
    reg.set_serving(3)
    (tmp_path / COPY).unlink()
    if damage == "missing":
        (tmp_path / POINTER).unlink()
    else:
        (tmp_path / POINTER).write_bytes(b"\x00\xff" if damage == "corrupt" else b'{"floor": 9}')
    read = reg.read_serving()
    assert read.source == "versions" and read.problem == ("missing" if damage == "missing" else "corrupt")
    assert (read.state.version, read.state.history, read.state.floor, read.state.pinned) == (3, [1, 2], 5, False)


def test_the_controller_rewrites_counts_and_never_promotes_a_stored_candidate(tmp_path):
    reg = _registry(tmp_path, "promoted", "candidate", "candidate")
    for name in (POINTER, COPY):
        (tmp_path / name).write_text("not json")
    c = Quiet(reg)
    assert c.check_pointer().version == 1
    assert c.recoveries("versions") == 1 and c.recoveries("backup") == 0
    assert reg.read_serving().problem is None and reg.serving_state().floor == 3
    c.reconcile()
    c.consider(3)
    assert reg.serving() == 1 and reg.meta(3).status == "candidate"  # stored before the loss: not promoted
    reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion())
    c.consider(4)  # written after: the gate decides it as usual
    assert reg.serving() == 4 and (4, "promoted") in c.announced
    assert c.check_pointer().version == 4 and c.recoveries("versions") == 1  # healthy: nothing counted


def test_no_automatic_promotion_while_the_pointer_cannot_be_rewritten(tmp_path, monkeypatch):
    reg = _registry(tmp_path, "promoted", "candidate")
    (tmp_path / POINTER).unlink()
    c = Quiet(reg)

    def refuse(name: str, payload: dict[str, Any]) -> None:
        raise RegistryError("disk full")

    with monkeypatch.context() as m:
        m.setattr(reg, "_write_pointer", refuse)
        assert c.check_pointer() is None
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion())
        c.consider(3)
        assert reg.meta(3).status == "candidate" and not (tmp_path / POINTER).exists()
    assert c.check_pointer().version == 1 and c.recoveries("backup") == 1  # rewritten, then decided
    assert reg.serving() == 3


def test_the_learner_start_does_not_serve_a_candidate_when_the_pointer_is_lost(tmp_path):
    reg = _registry(tmp_path, "promoted", "candidate")
    for name in (POINTER, COPY):
        (tmp_path / name).unlink()
    bootstrap_registry(reg, None)  # type: ignore[arg-type]  # settings are read only for an empty registry
    assert reg.serving() == 1
