"""The learner over a real broker: predict-then-train, versions with offsets, resume."""

import time

import pytest
from prometheus_client import CollectorRegistry

from learners.metrics import LearnerMetrics
from learners.model import TextClassifier
from learners.registry import LeaseError
from learners.service import LEASE_TTL_S, LearnerService
from learners.settings import LearnerSettings
from streaming.events import LabeledExample, ModelEvent
from streaming.kafka import Consumer, Producer

pytestmark = pytest.mark.integration

ROWS = [
    ("I love this, wonderful", "pos"),
    ("terrible, I hate it", "neg"),
    ("what a great day", "pos"),
    ("awful mess", "neg"),
]


def publish(settings, n, start=0, labels=None, one_by_one=False):
    """``one_by_one``: a flush per message, so every record is its own batch (tansu reports a
    topic's end as its last batch's first offset + 1, which under-counts the lag otherwise)."""
    p = Producer(settings)
    for i in range(start, start + n):
        text, label = ROWS[i % len(ROWS)]
        p.publish(
            settings.topics.labeled, LabeledExample(id=f"e{i}", text=f"{text} {i}", label=(labels or {}).get(i, label))
        )
        if one_by_one:
            p.flush()
    p.flush()
    p.close()


def learner_settings(tmp_path, **kw):
    values = {
        "registry_uri": str(tmp_path / "registry"),
        "batch_size": 8,
        "version_every_n": 16,
        "version_every_s": 3600,
        "eval_holdout_every": 0,  # every example trains here; held-out evaluation has its own test
    }
    values.update(kw)
    return LearnerSettings(**values)


def run_until(service, predicate, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, service.status()
        service.step(0.2)


def test_versions_hold_offsets_and_resume(make_settings, tmp_path):
    s = make_settings()
    ls = learner_settings(tmp_path)
    publish(s, 32)
    svc = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    assert svc.parent == 1  # start-up version from the base encoder
    assert svc.model.labels == []
    run_until(svc, lambda: svc.trained_total == 32)
    svc.close()
    versions = svc.registry.versions()
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[-1].offsets == {f"{s.topics.labeled}:0": 32}
    assert versions[-1].parent == 2
    assert versions[-1].labels == ["pos", "neg"]
    assert versions[-1].metrics.examples_trained == 32

    # the ModelEvents were published
    c = Consumer(s, group_id=None)
    c.assign([s.topics.models])
    events = []
    deadline = time.monotonic() + 10
    while len(events) < 2 and time.monotonic() < deadline:
        events += [ModelEvent.model_validate_json(r.value) for r in c.poll(0.5)]
    c.close()
    assert [(e.version, e.status, e.parent) for e in events] == [(2, "candidate", 1), (3, "candidate", 2)]

    # a restarted learner continues from the newest version's offsets: nothing is read twice
    publish(s, 16, start=32)
    again = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    assert again.parent == 3 and again.trained_total == 32
    run_until(again, lambda: again.trained_total == 48)
    again.close()
    assert again.registry.versions()[-1].offsets == {f"{s.topics.labeled}:0": 48}

    # weights written are the ones loaded
    model = TextClassifier.load(again.registry.local_path(4))
    assert model.labels == ["pos", "neg"]


def test_checkpoint_past_the_end_of_a_new_broker_starts_from_the_start(make_settings, tmp_path):
    old = make_settings()
    ls = learner_settings(tmp_path)
    publish(old, 16)
    svc = LearnerService(old, ls, LearnerMetrics(CollectorRegistry()))
    run_until(svc, lambda: svc.trained_total == 16)
    svc.close()
    # same topics names, but "a new, empty broker": the offsets point past the end
    fresh = make_settings(topic_prefix=old.topic_prefix + "x")
    meta = svc.registry.versions()[-1]
    svc.registry.update(meta.version, offsets={f"{fresh.topics.labeled}:0": 16})
    publish(fresh, 8)
    again = LearnerService(fresh, ls, LearnerMetrics(CollectorRegistry()))
    assert again._offsets == {f"{fresh.topics.labeled}:0": 0}
    run_until(again, lambda: again.trained_total == 24)
    again.close()


def test_prequential_predictions_are_made_before_training(make_settings, tmp_path):
    s = make_settings()
    ls = learner_settings(tmp_path, labels=["pos", "neg"])
    metrics = LearnerMetrics(CollectorRegistry())
    svc = LearnerService(s, ls, metrics)
    publish(s, 64)
    run_until(svc, lambda: svc.trained_total == 64)
    svc.close()
    acc = svc.prequential.value
    assert acc is not None and 0.0 <= acc <= 1.0
    assert metrics.prequential._value.get() == acc
    assert metrics.trained._value.get() == 64


def test_a_learner_far_behind_trains_on_a_sample_and_counts_the_rest_as_skipped(make_settings, tmp_path):
    s = make_settings(backlog_max=40, backlog_policy="sample")
    publish(s, 400, one_by_one=True)
    metrics = LearnerMetrics(CollectorRegistry())
    svc = LearnerService(s, learner_settings(tmp_path, version_every_n=1000), metrics)
    run_until(svc, lambda: svc.status()["offsets"].get(f"{s.topics.labeled}:0") == 400, timeout_s=120)
    trained, skipped = list(svc.versions.lineage["trained"]), list(svc.versions.lineage["backlog_skipped"])
    svc.write_version()
    svc.close()
    # every example consumed exactly once: trained, or left out by the backlog policy
    assert sorted(trained + skipped) == sorted(f"e{i}" for i in range(400))
    assert skipped and len(trained) >= 40  # it caught up by sampling, and kept training
    assert svc.trained_total == len(trained)
    assert metrics.backlog_skipped._value.get() == len(skipped)
    lineage = svc.registry.lineage(svc.parent)
    assert lineage is not None and sorted(lineage["backlog_skipped"]) == sorted(skipped)


def test_the_throttle_policy_trains_on_everything(make_settings, tmp_path):
    s = make_settings(backlog_max=40, backlog_policy="throttle")
    publish(s, 120, one_by_one=True)
    svc = LearnerService(s, learner_settings(tmp_path, version_every_n=1000), LearnerMetrics(CollectorRegistry()))
    run_until(svc, lambda: svc.trained_total == 120, timeout_s=120)
    assert svc.versions.lineage["backlog_skipped"] == []
    svc.close()


def test_a_second_learner_for_the_same_model_is_fenced(make_settings, tmp_path):
    s = make_settings()
    ls = learner_settings(tmp_path)
    first = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()), owner="learner-a")
    with pytest.raises(LeaseError, match="learner-a"):  # refused at start while the first one's lease is live
        LearnerService(s, ls, LearnerMetrics(CollectorRegistry()), owner="learner-b")
    # the first one stalls past its lease and another learner takes over: the first writes nothing more
    first.registry.acquire_lease("learner-b", LEASE_TTL_S, now=first.lease.expires + 1)
    publish(s, 16)
    with pytest.raises(LeaseError, match="lost its lease"):
        run_until(first, lambda: False)
    first.close()
    assert [v.version for v in first.registry.versions()] == [1]  # only the start-up version


def test_a_trickle_becomes_a_version_within_version_every_s(make_settings, tmp_path):
    """Continuous versions: far below ``version_every_n``, what was trained becomes a version
    once ``version_every_s`` passed; a step trains what arrived within ``batch_wait_ms``."""
    s = make_settings()
    ls = learner_settings(tmp_path, version_every_n=10_000, version_every_s=1.0, batch_wait_ms=300)
    svc = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    publish(s, 3, one_by_one=True)
    run_until(svc, lambda: len(svc.registry.versions()) == 2)
    newest = svc.registry.versions()[-1]
    assert newest.metrics.examples_trained == 3
    assert newest.offsets == {f"{s.topics.labeled}:0": 3}
    publish(s, 2, start=3, one_by_one=True)
    run_until(svc, lambda: len(svc.registry.versions()) == 3)
    assert svc.registry.versions()[-1].metrics.examples_trained == 5
    svc.close()
