"""``er-ace`` (the default): experience replay with ER-ACE's asymmetric cross-entropy, so a
burst of a new label does not push the old labels down (``learners.rehearsal.ERACELearner``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from learners.strategies._registry import register
from learners.strategies.replay import RehearsalSettings, rehearsal_args

if TYPE_CHECKING:
    from learners.base import Learner
    from learners.model import TextClassifier
    from learners.settings import LearnerSettings


def _build(settings: LearnerSettings, model: TextClassifier) -> Learner:
    from learners.rehearsal import ERACELearner

    return ERACELearner(model, **rehearsal_args(settings))


register("er-ace", _build, RehearsalSettings)
