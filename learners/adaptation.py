"""What the learner does when drift is detected.

The learner's own concept detectors watch its prequential errors; input and prediction drift
comes from the monitor as DriftEvents. On a detection of a kind in ``drift_act_on`` the
actions of ``drift_actions`` run once: ``snapshot`` writes a version of the model from before
the drift, ``boost`` multiplies the learning rate for ``drift_boost_examples`` examples,
``reset`` restarts the concept detectors when the boost ends. A cooldown of
``drift_cooldown_examples`` follows; detections while adapting are only noted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from learners.base import Learner
from learners.metrics import LearnerMetrics
from learners.settings import LearnerSettings
from streaming.drift import Detection, concept_detectors
from streaming.errors import InvalidEvent
from streaming.events import DriftEvent, decode
from streaming.kafka import Consumer, offset_key

log = logging.getLogger(__name__)

__all__ = ["DriftAdapter"]


class DriftAdapter:
    """The learner's concept detectors and its drift actions, one adaptation at a time.

    ``snapshot(note)`` writes a version when anything was trained since the last one and says
    whether it did; ``events``, when given, is a consumer assigned to the drift topic."""

    def __init__(
        self,
        settings: LearnerSettings,
        learner: Learner,
        metrics: LearnerMetrics,
        snapshot: Callable[[str], bool],
        events: Consumer | None = None,
        max_text_chars: int = 10_000,
    ) -> None:
        self.settings = settings
        self.learner = learner
        self.metrics = metrics
        self.snapshot = snapshot
        self.events = events
        self.max_text_chars = max_text_chars
        self.detectors = concept_detectors(settings.concept_detectors)
        metrics.track_detectors(self.detectors)
        metrics.lr_multiplier.set(1.0)
        self._boost_left = 0
        self._cooldown = 0
        self._reset_pending = False

    @property
    def adapting(self) -> bool:
        """Boosting or cooling down: a new detection triggers no action."""
        return self._cooldown > 0 or self._boost_left > 0

    def observe(self, wrong: Iterable[bool]) -> list[Detection]:
        """Feed the concept detectors the outcome of each prequential prediction (True: wrong);
        the detections, in order."""
        fired: list[Detection] = []
        for error in wrong:
            for detector in self.detectors:
                d = detector.update(1.0 if error else 0.0)
                if d is not None:
                    fired.append(d)
        for detector in self.detectors:
            self.metrics.observe_detector(detector)
        return fired

    def act_on(self, d: Detection) -> None:
        """The drift actions of the settings, unless already adapting."""
        m = self.metrics
        if d.kind not in self.settings.drift_act_on:
            return
        if self.adapting:
            log.info("drift from %s noted; already adapting (no new action)", d.detector)
            return
        actions = self.settings.drift_actions
        if "snapshot" in actions and self.snapshot(f"snapshot before adapting to {d.kind} drift ({d.detector})"):
            m.drift_actions.labels("snapshot").inc()
        if "boost" in actions and self.learner.set_lr_scale(self.settings.drift_boost_factor):
            self._boost_left = self.settings.drift_boost_examples
            m.lr_multiplier.set(self.settings.drift_boost_factor)
            m.drift_actions.labels("boost").inc()
        self._reset_pending = "reset" in actions
        self._cooldown = self.settings.drift_cooldown_examples
        log.warning("adapting to %s drift: %s", d.kind, ", ".join(actions))
        if self._boost_left == 0:
            self.after_examples(0)

    def after_examples(self, n: int) -> None:
        """Count adaptation down by ``n`` trained examples; when it ends, restore the learning
        rate and reset the detectors."""
        if self._boost_left > 0:
            self._boost_left = max(0, self._boost_left - n)
            if self._boost_left == 0:
                self.learner.set_lr_scale(1.0)
                self.metrics.lr_multiplier.set(1.0)
        elif self._cooldown > 0:
            self._cooldown = max(0, self._cooldown - n)
        if self._boost_left == 0 and self._reset_pending:
            for detector in self.detectors:
                detector.reset()
            self._reset_pending = False
            self.metrics.drift_actions.labels("reset").inc()

    def poll_events(self) -> None:
        """Act on the DriftEvents other components published about this model."""
        if self.events is None:
            return
        records = self.events.poll(0.0, max_records=100)
        for rec in records:
            try:
                ev = decode(DriftEvent, rec.value, self.max_text_chars)
            except InvalidEvent:
                continue
            if ev.source != "learner" and ev.model == self.settings.model_name:
                self.act_on(Detection(ev.detector, ev.kind, ev.score, ev.threshold or 0.0, ev.at))
        if records:
            self.events.commit({offset_key(r.topic, r.partition): r.offset + 1 for r in records})

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
