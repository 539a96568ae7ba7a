"""Avalanche strategies' registration: a strategy file names its plugins (or template) and
its settings; the learner is built by ``learners.strategies._avalanche``, imported only then
(Avalanche takes seconds to import)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from learners.strategies._registry import StrategySpec, fine_tune_args, get, register

if TYPE_CHECKING:
    from learners.base import Learner
    from learners.model import TextClassifier
    from learners.settings import LearnerSettings


def register_avalanche(
    name: str,
    plugins: Callable[..., list[Any]] | None = None,
    settings: type[BaseModel] | None = None,
    template: Callable[..., Any] | None = None,
) -> StrategySpec:
    """Add an Avalanche strategy: ``plugins(learner, options)`` gives its plugins and
    ``template(learner, options, **common)`` its own template (default: the supervised one)."""
    return register(name, functools.partial(_avalanche, name), settings, plugins=plugins, template=template)


def _avalanche(name: str, settings: LearnerSettings, model: TextClassifier) -> Learner:
    from learners.strategies._avalanche import AvalancheLearner  # imports Avalanche (seconds)

    options = get(name).options(settings)
    return AvalancheLearner(
        model,
        strategy=name,
        batch_size=settings.batch_size,
        window=settings.window,
        options=options,
        **fine_tune_args(settings),
    )
