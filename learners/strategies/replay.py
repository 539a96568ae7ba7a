"""``replay``: experience replay, each micro-batch trained with a few examples drawn from the
replay memory, plain cross-entropy over both (``learners.rehearsal.ReplayLearner``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from learners.memory import ReplaySettings, replay_ratio
from learners.strategies._registry import fine_tune_args, register

if TYPE_CHECKING:
    from learners.base import Learner
    from learners.model import TextClassifier
    from learners.settings import LearnerSettings


class RehearsalSettings(ReplaySettings):
    """The replay memory's settings, and the weight of matching the logits stored with it."""

    replay_logit_alpha: float = Field(
        1.0,
        ge=0,
        le=100,
        description="replay, er-ace: weight of matching replayed examples' logits to the ones stored with them "
        "(dark experience replay); 0: labels only",
    )

    class_stats_weight: float = Field(
        1.0,
        ge=0,
        le=10,
        description="replay, er-ace: weight of the class-statistics discriminant on the frozen layers served beside "
        "the head (learners/classstats.py); 0: the head alone",
    )
    class_stats_shrinkage: float = Field(
        0.1, gt=0, le=1, description="replay, er-ace: shrinkage of the class statistics' covariance towards its mean"
    )


def rehearsal_args(settings: LearnerSettings) -> dict[str, Any]:
    """The constructor arguments of the rehearsal learners (``replay``, ``er-ace``)."""
    own = RehearsalSettings.model_validate(settings, from_attributes=True)
    return {
        "buffer_size": own.replay_buffer,
        "buffer_fraction": own.replay_fraction,
        "replay_ratio": replay_ratio(own.replay_ratio, settings.strategy),
        "replay_policy": own.replay_policy,
        "logit_alpha": own.replay_logit_alpha,
        "class_stats_weight": own.class_stats_weight,
        "class_stats_shrinkage": own.class_stats_shrinkage,
        **fine_tune_args(settings),
    }


def _build(settings: LearnerSettings, model: TextClassifier) -> Learner:
    from learners.rehearsal import ReplayLearner

    return ReplayLearner(model, **rehearsal_args(settings))


register("replay", _build, RehearsalSettings)
