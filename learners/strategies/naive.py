"""``naive``: plain incremental fine-tuning, one optimizer step per micro-batch (the baseline
every other strategy is measured against)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from learners.strategies._registry import fine_tune_args, register

if TYPE_CHECKING:
    from learners.base import Learner
    from learners.model import TextClassifier
    from learners.settings import LearnerSettings


def _build(settings: LearnerSettings, model: TextClassifier) -> Learner:
    from learners.finetune import FineTuneLearner

    return FineTuneLearner(model, **fine_tune_args(settings))


register("naive", _build)
