"""The learner's drift adaptation on its own: one adaptation at a time, boost then reset, the
cool-down, and the snapshot only when something was trained since the last version."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from learners.adaptation import DriftAdapter
from learners.metrics import LearnerMetrics
from learners.settings import LearnerSettings
from streaming.drift import Detection
from streaming.metrics import sample_value


class Stub:
    """A learner that records the learning-rate scales it was given."""

    def __init__(self) -> None:
        self.scales: list[float] = []

    def set_lr_scale(self, scale: float) -> bool:
        self.scales.append(scale)
        return True


def actions(metrics: LearnerMetrics, action: str) -> float | None:
    return sample_value(metrics.exposition(), "streamcl_drift_actions_total", {"action": action})


def test_boost_then_reset_then_cool_down_and_snapshot_only_with_news() -> None:
    settings = LearnerSettings(
        drift_act_on=["concept"], drift_boost_examples=10, drift_boost_factor=3.0, drift_cooldown_examples=5
    )
    metrics, learner, notes = LearnerMetrics(CollectorRegistry()), Stub(), []
    trained_since = [0]

    def snapshot(note: str) -> bool:
        notes.append(note)
        return trained_since[0] > 0

    drift = DriftAdapter(settings, learner, metrics, snapshot)  # type: ignore[arg-type]
    d = Detection("ddm", "concept", 3.0, 2.0, 100)
    drift.act_on(Detection("ks", "input", 3.0, 2.0, 100))  # not a kind it acts on
    assert not drift.adapting and learner.scales == []
    drift.act_on(d)
    assert drift.adapting and learner.scales == [3.0] and actions(metrics, "snapshot") == 0
    drift.act_on(d)  # already adapting: noted only
    assert learner.scales == [3.0] and actions(metrics, "boost") == 1
    drift.after_examples(9)
    assert learner.scales == [3.0] and actions(metrics, "reset") == 0
    drift.after_examples(1)  # the boost ends: rate restored, detectors reset, cool-down begins
    assert learner.scales == [3.0, 1.0] and actions(metrics, "reset") == 1 and drift.adapting
    drift.after_examples(5)
    assert not drift.adapting
    trained_since[0] = 4
    drift.act_on(d)
    assert actions(metrics, "snapshot") == 1 and len(notes) == 2 and "concept drift (ddm)" in notes[-1]


def test_observe_reports_detections_in_order() -> None:
    settings = LearnerSettings(concept_detectors=["ddm"])
    drift = DriftAdapter(settings, Stub(), LearnerMetrics(CollectorRegistry()), lambda note: False)  # type: ignore[arg-type]
    fired = drift.observe([False] * 200 + [True] * 200)
    assert fired and all(d.kind == "concept" and d.detector == "ddm" for d in fired)
