"""Small versions from the real learner (issue 16, point 1): against the broker, the learner
writes deltas of the start-up version, resumes from one after a restart and keeps writing
deltas of the same base; where everything trains, versions stay full."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from test_learner_crash import publish, run_to_version_3, settings
from test_learner_service import run_until

from learners._delta import BASES
from learners.metrics import LearnerMetrics
from learners.model import WEIGHTS_FILE, TextClassifier
from learners.registry import BaseRef
from learners.service import LearnerService

pytestmark = pytest.mark.integration


def _weights(registry, version: int) -> int:
    return (registry.local_path(version) / WEIGHTS_FILE).stat().st_size


def test_the_learner_writes_small_versions_and_resumes_from_one(make_settings, tmp_path):
    s = make_settings()
    ls, svc = run_to_version_3(s, tmp_path)
    registry = svc.registry
    first = registry.meta(1)
    base = BaseRef(version=1, sha256=first.files[WEIGHTS_FILE])
    assert first.base is None
    assert [registry.meta(v).base for v in (2, 3)] == [base, base]
    assert _weights(registry, 3) < _weights(registry, 1) / 4  # one trained layer and the head
    BASES.clear()  # a new process: the restarted learner reads the base once, then the delta
    publish(s, range(32, 48))
    again = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    assert again.parent == 3
    run_until(again, lambda: again.parent == 4)
    again.close()
    assert registry.meta(4).base == base
    served = registry.load_model(4)
    resumed = TextClassifier.load(registry.local_path(4))
    texts = ["what a lovely flight", "lost my bag again"]
    assert [p.scores for p in served.predict(texts)] == [p.scores for p in resumed.predict(texts)]


def test_versions_stay_full_where_everything_trains(make_settings, tmp_path):
    s = make_settings()
    publish(s, range(16))
    ls = settings(tmp_path, eval_holdout_every=0, version_every_n=16, version_every_s=3600, trainable_layers=-1)
    svc = LearnerService(s, ls, LearnerMetrics(CollectorRegistry()))
    run_until(svc, lambda: svc.parent == 2)
    svc.close()
    assert svc.registry.meta(2).base is None
    assert _weights(svc.registry, 2) >= _weights(svc.registry, 1) - 4096
