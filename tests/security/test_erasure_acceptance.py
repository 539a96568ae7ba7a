"""Erasure end to end over the real learner, broker and a local registry (issue 15, acceptance)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from learners.erasure import ERASED
from learners.metrics import LearnerMetrics
from learners.service import LearnerService
from learners.settings import LearnerSettings
from services.audit import AuditTrail, read_history
from services.controller import ModelController
from services.metrics import ControllerMetrics
from streaming.events import LabeledExample
from streaming.kafka import Producer

pytestmark = pytest.mark.integration

ERASE = [f"e{i}" for i in range(10)]


def text_of(i: int) -> str:
    return f"my name is person{i:03d}q and I " + ("love it" if i % 2 else "hate it")


class Controller(ModelController):
    """The controller's operator calls without Kafka or Ray: erasure reaches ``learner`` directly."""

    def __init__(self, registry, learner):
        self.registry, self.model, self.decided = registry, "default", 0
        self.metrics = ControllerMetrics(CollectorRegistry())
        self._lock = threading.RLock()
        self._audit = AuditTrail(registry, "default")
        self.learner = learner


def test_forget_leaves_no_text_of_the_ids_in_the_state_dir_nor_the_newest_version(make_settings, monkeypatch):
    """One person's texts could not be deleted: buffers, held-out samples and every retained
    version kept them raw."""
    s = make_settings()
    ls = LearnerSettings(
        registry_uri=str(s.state_dir / "registry"),
        batch_size=8,
        version_every_n=16,
        version_every_s=3600,
        eval_holdout_every=3,
        replay_buffer=1000,
        replay_fraction=1.0,
        keep_versions=10,
    )
    producer = Producer(s)
    for i in range(48):
        label = "pos" if i % 2 else "neg"
        producer.publish(s.topics.labeled, LabeledExample(id=f"e{i}", text=text_of(i), label=label))
    for i in range(3):  # dead-lettered: the raw text reaches only the DLQ topic
        producer.send(s.topics.labeled, ("{not json " + text_of(i)).encode(), key=f"e{i}")
    producer.flush()
    producer.close()
    svc = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    try:
        deadline, key = time.monotonic() + 180, f"{s.topics.labeled}:0"
        while svc.status()["offsets"].get(key) != 51:  # 48 examples and 3 dead letters
            assert time.monotonic() < deadline, svc.status()
            svc.step(0.2)
        svc.write_version()
        before = svc.registry.latest().version
        folder = svc.registry.local_path(before)
        assert any(text_of(i) in (folder / "holdout.json").read_text() for i in range(10)), "some were held out"
        assert any(text_of(i) in (folder / "replay.json").read_text() for i in range(10)), "some were buffered"

        monkeypatch.setattr("services.controller.ray_calls", lambda model: (svc.erase, []))
        answer = Controller(svc.registry, svc).forget(ERASE, who="privacy-officer")
    finally:
        svc.close()

    assert answer["learner"]["version"] > before
    assert answer["trained_in"]["versions"], answer  # which versions trained on them
    newest = svc.registry.latest()
    assert sorted(svc.registry.lineage(newest.version)[ERASED]) == sorted(ERASE)
    texts = [text_of(i) for i in range(10)]
    for path in sorted(s.state_dir.rglob("*")):
        if path.is_file():
            raw = path.read_bytes().decode("utf-8", errors="ignore")
            assert not [t for t in texts if t in raw], path
    for path in svc.registry.local_path(newest.version).iterdir():
        assert not [t for t in texts if t in path.read_bytes().decode("utf-8", errors="ignore")], path
    assert text_of(21) in (svc.registry.local_path(newest.version) / "replay.json").read_text()  # the rest stays
    (record,) = [r for r in read_history(svc.registry) if r["action"] == "forget"]
    assert record["who"] == "privacy-officer" and record["outcome"] == "ok" and record["ids"] == ERASE
    assert json.dumps(record).count("person") == 0  # the trail holds ids, never texts
