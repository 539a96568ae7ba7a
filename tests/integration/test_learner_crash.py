"""Crash-safe learning: a learner that fails, finds a corrupt checkpoint, or is killed (a real
Ray actor, several times, mid-stream) consumes every labeled example exactly once in the
lineage that survives: trained on once, or held out once, or dead-lettered once."""

from __future__ import annotations

import random
import threading
import time

import pytest
from prometheus_client import CollectorRegistry
from test_learner_service import learner_settings, run_until

from learners.metrics import LearnerMetrics
from learners.registry import LocalRegistry
from learners.service import LearnerService
from streaming.events import LabeledExample
from streaming.kafka import Producer
from streaming.metrics import sample_value

pytestmark = pytest.mark.integration

TEXTS = [("what a lovely flight", "pos"), ("lost my bag again", "neg"), ("the crew was kind", "pos")]


def publish(settings, ids, bad=()):
    p = Producer(settings)
    for i in ids:
        text, label = TEXTS[i % len(TEXTS)]
        p.publish(settings.topics.labeled, LabeledExample(id=f"e{i}", text=f"{text} {i}", label=label, domain="d"))
        if i in bad:
            p.send(settings.topics.labeled, b"{not json", key=f"bad{i}")
    p.flush()
    p.close()


def lineage_of(registry, version):
    """Every version from ``version`` back to the start-up one, and the ids they consumed."""
    chain, ids, skipped = [], [], []
    while version is not None:
        meta = registry.meta(version)
        chain.append(version)
        lineage = registry.lineage(version) or {}
        ids += lineage.get("trained", []) + lineage.get("held_out", []) + lineage.get("backlog_skipped", [])
        skipped += lineage.get("skipped", [])
        version = meta.parent
    return chain, ids, skipped


def settings(tmp_path, **kw):
    small = {"strategy": "naive", "max_length": 24, "trainable_layers": 1, "version_every_n": 24}
    holdout = {"version_every_s": 1.0, "eval_holdout_every": 4, "eval_per_domain": 6, "eval_recent": 4}
    return learner_settings(tmp_path, **{**small, **holdout, **kw})


def test_a_failed_training_step_reads_its_batch_again(make_settings, tmp_path):
    s = make_settings()
    publish(s, range(24))
    svc = LearnerService(s, settings(tmp_path, eval_holdout_every=0), LearnerMetrics(CollectorRegistry()))
    real, calls = svc.learner.learn, []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(batch)

    svc.learner.learn = flaky  # type: ignore[method-assign]
    failures = 0
    deadline = time.monotonic() + 60
    while svc.trained_total < 24:
        assert time.monotonic() < deadline, svc.status()
        try:
            svc.step(0.2)
        except RuntimeError:
            failures += 1
    run_until(svc, lambda: svc.registry.latest().offsets == {f"{s.topics.labeled}:0": 24})
    svc.close()
    assert failures == 1 and svc.trained_total == 24
    _, ids, _ = lineage_of(svc.registry, svc.registry.latest().version)
    assert sorted(ids) == sorted(f"e{i}" for i in range(24))


def run_to_version_3(s, tmp_path):
    """A learner that trained 32 examples into versions 2 and 3, then closed: its settings and it."""
    ls = settings(tmp_path, eval_holdout_every=0, version_every_n=16, version_every_s=3600)
    publish(s, range(32))
    svc = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    run_until(svc, lambda: svc.parent == 3)
    svc.close()
    return ls, svc


def test_a_corrupt_newest_version_is_skipped_loudly_for_the_one_before(make_settings, tmp_path, caplog):
    s = make_settings()
    ls, svc = run_to_version_3(s, tmp_path)
    registry = svc.registry
    weights = registry.local_path(3) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn write
    metrics = LearnerMetrics(CollectorRegistry())
    again = LearnerService(s, ls, metrics)
    assert again.parent == 2 and again._offsets == {f"{s.topics.labeled}:0": 16}
    assert "CANNOT RESUME from version 3" in caplog.text
    assert sample_value(metrics.exposition(), "streamcl_learner_checkpoint_fallbacks_total") == 1
    run_until(again, lambda: again.registry.latest().version == 4)
    again.close()
    # the new lineage continues from version 2 and takes examples 16..31 once more, once
    chain, ids, _ = lineage_of(registry, 4)
    assert chain == [4, 2, 1] and sorted(ids) == sorted(f"e{i}" for i in range(32))


def test_killing_the_learner_actor_mid_stream_consumes_every_example_once(make_settings, tmp_path):
    import ray

    from services.platform import _learner
    from streaming.runtime import ServiceHost

    s = make_settings(state_dir=tmp_path / "state")
    ls = settings(tmp_path, strategy="er-ace")  # the default: a buffer, logits and moments to checkpoint
    n, bad = 480, {50, 200, 333}
    ray.init(num_cpus=2, include_dashboard=False, namespace="crash-test", log_to_driver=False)
    producer = None
    try:
        actor = (
            ray.remote(ServiceHost)
            .options(name="learner", num_cpus=1, max_restarts=-1, max_task_retries=0)
            .remote(_learner(s, ls), "learner", LearnerMetrics, None, False)
        )
        ray.get(actor.status.remote(), timeout=120)

        def produce():  # a live stream: 480 examples over ~16 s, three of them malformed
            for start in range(0, n, 30):
                publish(s, range(start, start + 30), bad)
                time.sleep(1.0)

        def pid():  # the actor's process, once it answers (it may be restarting)
            deadline = time.monotonic() + 120
            while True:
                try:
                    return ray.get(actor.status.remote(), timeout=30)["pid"]
                except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                    assert time.monotonic() < deadline, "the learner actor did not come back"
                    time.sleep(0.5)

        producer = threading.Thread(target=produce)
        producer.start()
        pids, rng = set(), random.Random(7)
        for _ in range(4):  # kill it at random moments, mid-training or mid-checkpoint
            time.sleep(rng.uniform(3.0, 6.0))
            pids.add(pid())
            ray.kill(actor, no_restart=False)
        producer.join()
        registry = LocalRegistry(ls.registry_uri)
        deadline = time.monotonic() + 240
        while True:  # the restarted learner catches up and checkpoints the end of the stream
            latest = registry.latest()
            if latest and sum(latest.offsets.values()) == n + len(bad):
                break
            assert time.monotonic() < deadline, latest and latest.offsets
            time.sleep(1.0)
        pids.add(pid())
        ray.get(actor.stop.remote(), timeout=60)
    finally:
        if producer is not None:
            producer.join()
        ray.shutdown()
    assert len(pids) == 5  # four kills, five processes
    chain, ids, skipped = lineage_of(registry, latest.version)
    assert len(ids) == len(set(ids)), "an example was consumed twice in the surviving lineage"
    assert sorted(ids) == sorted(f"e{i}" for i in range(n)), "an example was lost"
    assert len(skipped) == len(bad)  # the malformed records, dead-lettered once each
    counted = [registry.meta(v).consumed for v in chain]
    assert sum(c.get("trained", 0) + c.get("held_out", 0) for c in counted) == n
    # the versions that lost their learner are not in the lineage, but stay in the registry
    assert len(registry.versions()) >= len(chain)


def test_only_the_two_newest_versions_keep_the_learners_state(make_settings, tmp_path):
    s = make_settings()
    ls = settings(tmp_path, strategy="replay", eval_holdout_every=0, version_every_n=8, version_every_s=3600)
    publish(s, range(40))
    svc = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    run_until(svc, lambda: svc.parent == 6)
    svc.close()
    versions = {m.version: m for m in svc.registry.versions()}
    # class statistics; optimizer moments; buffer and random state
    state = ["class_stats.safetensors", "finetune.safetensors", "replay.json"]
    assert [versions[v].state_files for v in range(2, 7)] == [state] * 5
    with_state = [v for v, m in versions.items() if (svc.registry.local_path(v) / "replay.json").exists()]
    assert with_state == [5, 6]
    assert versions[4].dropped == state and not set(state) & set(versions[4].files)
    # an older version still loads (weights intact) and serves
    from learners.model import TextClassifier

    assert TextClassifier.load(svc.registry.local_path(3)).labels == ["pos", "neg"]
