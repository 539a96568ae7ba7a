"""The model controller over a real broker with a corrupt serving pointer: it rewrites the
pointer (counted), promotes no candidate stored before the loss, keeps an operator's pin when
the pointer's copy survives, and still gates candidates announced afterwards."""

import time

import pytest
from prometheus_client import CollectorRegistry

from learners.registry import LocalRegistry, NewVersion
from services.controller import ModelController
from services.metrics import ControllerMetrics
from streaming.events import ModelEvent
from streaming.kafka import Producer

pytestmark = pytest.mark.integration


def candidate(reg: LocalRegistry, parent: int) -> int:
    meta = reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(parent=parent))
    return meta.version


def serving_one(tmp_path) -> LocalRegistry:
    """A registry whose version 1 is promoted and serving."""
    reg = LocalRegistry(tmp_path / "registry")
    reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status="promoted"))
    reg.set_serving(1)
    return reg


def announce(s, reg: LocalRegistry, version: int, parent: int) -> None:
    p = Producer(s)
    uri = reg.version_uri(version)
    event = ModelEvent(model="default", version=version, status="candidate", parent=parent, uri=uri)
    p.publish(s.topics.models, event)
    p.flush()
    p.close()


def steps(c: ModelController, until, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, c.status()
        c.step()


def test_a_lost_pointer_never_promotes_a_stored_candidate(make_settings, tmp_path):
    s = make_settings()
    reg = serving_one(tmp_path)
    candidate(reg, 1), candidate(reg, 2)
    for name in ("serving.json", "serving.prev.json"):
        (reg.root / name).write_text("garbage")
    metrics = ControllerMetrics(CollectorRegistry())
    recovered = metrics.pointer_recoveries.labels
    c = ModelController(s, reg, metrics)
    try:
        assert recovered("versions")._value.get() == 1 and reg.read_serving().problem is None
        assert reg.serving() == 1 and reg.serving_state().floor == 3 and reg.meta(3).status == "candidate"
        announce(s, reg, 3, 2)  # an old candidate announced again: under the floor
        c.step(), c.step()
        assert reg.serving() == 1 and reg.meta(3).status == "candidate"
        announce(s, reg, candidate(reg, 3), 3)  # written after the loss: gated as usual
        steps(c, lambda: reg.serving() == 4)

        assert c.admin("pin")["pinned"] is True
        (reg.root / "serving.json").write_bytes(b'{"version": 4, "pinn')  # its copy survives
        c.step()
        assert recovered("backup")._value.get() == 1 and reg.serving_state().pinned is True
        announce(s, reg, candidate(reg, 4), 4)
        c.step(), c.step(), c.step()
        assert reg.serving() == 4 and reg.meta(5).status == "candidate"  # the pin holds
        assert recovered("versions")._value.get() == 1
    finally:
        c.close()


def test_unreadable_version_metadata_is_exported(make_settings, tmp_path):
    s = make_settings()
    reg = serving_one(tmp_path)
    candidate(reg, 1)
    (reg.root / "versions" / "000002" / "meta.json").write_text('{"version": 2, "status": ')
    metrics = ControllerMetrics(CollectorRegistry())
    c = ModelController(s, reg, metrics)
    try:
        assert metrics.unreadable_versions._value.get() == 1  # left out of the listing, but visible
        assert reg.serving() == 1  # and never promoted
    finally:
        c.close()
