"""Exactly once into training, by id, over the real broker: labeled examples published twice
(as a restarted joiner or a client retry would) are trained once, the repeats listed as
``duplicate``; and a learner killed by a failpoint between the registry write, the ModelEvent
and the offset commit resumes with every id exactly once in the surviving lineage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from test_learner_crash import settings as crash_settings
from test_learner_service import run_until

from learners.metrics import LearnerMetrics
from learners.registry import LeaseError, LocalRegistry, Registry
from learners.service import LEASE_TTL_S, LearnerService
from learners.settings import LearnerSettings
from streaming.events import LabeledExample, ModelEvent, decode
from streaming.kafka import Consumer, Producer
from streaming.metrics import sample_value
from streaming.settings import StreamSettings

pytestmark = pytest.mark.integration

TEXTS = [("what a lovely flight", "pos"), ("lost my bag again", "neg"), ("the crew was kind", "pos")]
TAKEN = ("trained", "held_out", "backlog_skipped")


def publish(settings: StreamSettings, ids: range, flip: bool = False) -> None:
    """``e{i}`` for each of ``ids``; ``flip``: with the other label (a second, later label)."""
    p = Producer(settings)
    for i in ids:
        text, label = TEXTS[i % len(TEXTS)]
        if flip:
            label = "neg" if label == "pos" else "pos"
        p.publish(settings.topics.labeled, LabeledExample(id=f"e{i}", text=f"{text} {i}", label=label, domain="d"))
    p.flush()
    p.close()


def surviving_lineage(registry: Registry, version: int | None) -> tuple[list[int], dict[str, list[str]]]:
    """The versions from ``version`` back to the start-up one, and their lineage lists joined."""
    chain: list[int] = []
    lists: dict[str, list[str]] = {}
    while version is not None:
        chain.append(version)
        for kind, ids in (registry.lineage(version) or {}).items():
            lists.setdefault(kind, []).extend(ids)
        version = registry.meta(version).parent
    return chain, lists


def taken(lists: dict[str, list[str]]) -> list[str]:
    return [i for kind in TAKEN for i in lists.get(kind, [])]


def ids(r: range) -> list[str]:
    return sorted(f"e{i}" for i in r)


def test_ids_published_twice_are_trained_once_and_listed_as_duplicates(make_settings, tmp_path):
    s = make_settings()
    ls = crash_settings(tmp_path, version_every_n=8)
    publish(s, range(16))
    publish(s, range(16), flip=True)  # the same ids again (a restarted joiner), with a later label
    publish(s, range(16, 24))
    metrics = LearnerMetrics(CollectorRegistry())
    svc = LearnerService(s, ls, metrics)
    labeled = f"{s.topics.labeled}:0"
    run_until(svc, lambda: svc.registry.latest().offsets.get(labeled) == 40, timeout_s=120)
    svc.close()
    registry = svc.registry
    chain, lists = surviving_lineage(registry, registry.latest().version)
    assert sorted(taken(lists)) == ids(range(24)), "an id was trained twice or lost"
    assert sorted(lists["duplicate"]) == ids(range(16))
    assert lists["held_out"], "held-out ids are taken too"
    assert sample_value(metrics.exposition(), "streamcl_learner_duplicates_total") == 16
    assert sum(registry.meta(v).consumed.get("duplicate", 0) for v in chain) == 16
    assert svc.trained_total == len(lists["trained"])
    # the first label won: the held-out sample has the labels of the first publication
    first = {f"{text} {i}": label for i in range(24) for text, label in [TEXTS[i % len(TEXTS)]]}
    held = [row for rows in svc.holdout.samples.values() for row in rows] + [r[:2] for r in svc.holdout.recent]
    assert held and all(label == first[text] for text, label in held)

    # a learner resumed from the newest version knows every id its lineage took (dedupe.bin)
    assert "dedupe.bin" in registry.latest().files
    publish(s, range(8, 28))  # 20 more: e8..e23 once more, e24..e27 new
    again = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    run_until(again, lambda: again.registry.latest().offsets.get(labeled) == 60, timeout_s=120)
    again.close()
    _, lists = surviving_lineage(registry, registry.latest().version)
    assert sorted(taken(lists)) == ids(range(28))
    assert sorted(lists["duplicate"]) == sorted(ids(range(16)) + ids(range(8, 24)))


CHILD = """
import logging, sys, time
logging.basicConfig(level=logging.INFO)
from prometheus_client import CollectorRegistry
from learners.metrics import LearnerMetrics
from learners.service import LearnerService
from learners.settings import LearnerSettings
from streaming.settings import StreamSettings
svc = LearnerService(StreamSettings(), LearnerSettings(), LearnerMetrics(CollectorRegistry()))
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    svc.step(0.2)
sys.exit(3)  # the failpoint never fired
"""


def _env(s: StreamSettings, ls: LearnerSettings, point: str, fired: Path) -> dict[str, str]:
    """The child learner's settings, as ``STREAMCL_*`` variables, with ``point`` armed."""
    values: dict[str, Any] = {
        "kafka_bootstrap": s.kafka_bootstrap,
        "topic_prefix": s.topic_prefix,
        "consumer_group": s.consumer_group,
        "state_dir": s.state_dir,
        "registry_uri": ls.registry_uri,
        "failpoints": point,
        "failpoints_dir": fired,
    }
    for name in ("strategy", "max_length", "trainable_layers", "batch_size", "version_every_n", "version_every_s"):
        values[name] = getattr(ls, name)
    for name in ("eval_holdout_every", "eval_per_domain", "eval_recent", "seed", "dedupe_window"):
        values[name] = getattr(ls, name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCL_")}
    return {**env, **{f"STREAMCL_{k.upper()}": str(v) for k, v in values.items()}}


def _resume(s: StreamSettings, ls: LearnerSettings) -> LearnerService:
    """A learner for the same model, once the killed one's lease expired."""
    deadline = time.monotonic() + LEASE_TTL_S * 4
    while True:
        try:
            return LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
        except LeaseError:
            assert time.monotonic() < deadline, "the killed learner's lease never expired"
            time.sleep(1.0)


def _model_events(s: StreamSettings) -> list[int]:
    c = Consumer(s, group_id=None)
    c.assign([s.topics.models])
    versions: list[int] = []
    for _ in range(10):
        versions += [decode(ModelEvent, r.value, s.max_text_chars).version for r in c.poll(0.5)]
    c.close()
    return versions


@pytest.mark.parametrize("point", ["learner.after_registry_write", "learner.after_model_event"])
def test_a_learner_killed_inside_the_version_write_trains_every_id_once(make_settings, tmp_path, point):
    s = make_settings()
    ls = crash_settings(tmp_path, version_every_n=16)
    labeled = f"{s.topics.labeled}:0"
    publish(s, range(40))
    fired = tmp_path / "failpoints"
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=_env(s, ls, point, fired), capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 137, child.stderr[-3000:]
    assert (fired / f"{point}.fired").is_file() and f"FAILPOINT {point}" in child.stderr
    assert ls.registry_uri is not None
    registry = LocalRegistry(ls.registry_uri)
    written = registry.latest()
    assert written.version == 2  # the version it wrote is durable; its offsets were never committed
    events = _model_events(s)
    assert events == ([] if point == "learner.after_registry_write" else [2])

    publish(s, range(24, 40))  # a restarted joiner sends its last pairs again
    publish(s, range(40, 56))
    again = _resume(s, ls)
    assert again.parent == 2 and again._offsets == {labeled: written.offsets[labeled]}
    run_until(again, lambda: again.registry.latest().offsets.get(labeled) == 72, timeout_s=180)
    again.close()
    chain, lists = surviving_lineage(registry, registry.latest().version)
    assert 2 in chain
    got = taken(lists)
    assert len(got) == len(set(got)), "an id was trained twice in the surviving lineage"
    assert sorted(got) == ids(range(56)), "an id was lost"
    assert sorted(lists["duplicate"]) == ids(range(24, 40))
    announced = _model_events(s)  # the restarted learner announced the version whose event died
    assert set(chain) - {1} <= set(announced)  # (twice for a version announced before the kill)
