"""Held-out figures on a timer (STREAMCL_EVAL_EVERY_S): at a version a second, scoring every
one would cost the learner a sixth of its time while it is behind; the versions in between carry
no held-out figures, and a snapshot or an erasure version is always scored."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from learners.base import Example
from learners.evaluation import Holdout
from learners.metrics import LearnerMetrics
from learners.model import TextClassifier
from learners.registry import LocalRegistry
from learners.settings import LearnerSettings
from learners.strategies import build_learner
from learners.versioning import Versioner, bootstrap_registry
from streaming.accuracy import RollingAccuracy


def _versioner(tmp_path, eval_every_s: float) -> Versioner:
    settings = LearnerSettings(registry_uri=str(tmp_path), labels=["pos", "neg"], eval_every_s=eval_every_s)
    registry = LocalRegistry(tmp_path)
    bootstrap_registry(registry, settings)
    model = TextClassifier.from_encoder(None, ["pos", "neg"], 32)
    holdout = Holdout(every=1, per_domain=4)
    for i in range(4):
        holdout.take(Example(f"good {i}", "pos", "a"))
    learner = build_learner(settings, model)
    metrics = LearnerMetrics(CollectorRegistry())
    return Versioner(registry, settings, metrics, model, learner, holdout, RollingAccuracy(10))


def _write(v: Versioner, parent: int, note: str | None = None) -> int:
    meta = v.write(parent, {}, 0, note)
    v.committed(meta)
    return meta.version


def test_versions_between_scored_ones_carry_no_figures(tmp_path):
    v = _versioner(tmp_path, eval_every_s=3600)
    first = _write(v, 1)
    second = _write(v, first)
    snapshot = _write(v, second, note="snapshot before adapting to concept drift")
    metrics = {m.version: m.metrics for m in v.registry.versions()}
    assert metrics[first].holdout_sizes == {"a": 4} and metrics[first].average_accuracy is not None
    assert metrics[second].holdout_sizes == {} and metrics[second].average_accuracy is None
    assert metrics[snapshot].holdout_sizes == {"a": 4}


def test_zero_scores_every_version(tmp_path):
    v = _versioner(tmp_path / "r", eval_every_s=0)
    first = _write(v, 1)
    second = _write(v, first)
    metrics = {m.version: m.metrics for m in v.registry.versions()}
    assert metrics[first].holdout_sizes == metrics[second].holdout_sizes == {"a": 4}
