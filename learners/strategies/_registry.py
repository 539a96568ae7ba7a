"""The strategy registry: each strategy file registers its name, its factory and its settings.

Torch-free: ``learners.settings`` reads it to merge the strategies' own settings into
``LearnerSettings`` and to validate ``STREAMCL_STRATEGY``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from learners.base import Learner
    from learners.model import TextClassifier
    from learners.settings import LearnerSettings

Factory = Callable[["LearnerSettings", "TextClassifier"], "Learner"]


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """A registered strategy. ``settings``: the model of its own hyperparameters (merged into
    ``LearnerSettings``, same names); ``plugins`` and ``template``: for an Avalanche strategy,
    what its learner trains with (see ``learners.strategies._avalanche``)."""

    name: str
    factory: Factory
    settings: type[BaseModel] | None = None
    plugins: Callable[..., list[Any]] | None = None
    template: Callable[..., Any] | None = None

    def options(self, settings: Any) -> BaseModel | None:
        """Its own settings read from ``settings`` by name (a field it lacks: the default)."""
        return None if self.settings is None else self.settings.model_validate(settings, from_attributes=True)


_SPECS: dict[str, StrategySpec] = {}


def register(
    name: str,
    factory: Factory,
    settings: type[BaseModel] | None = None,
    *,
    plugins: Callable[..., list[Any]] | None = None,
    template: Callable[..., Any] | None = None,
) -> StrategySpec:
    """Add a strategy under ``name`` (ValueError when the name is taken)."""
    if name in _SPECS:
        raise ValueError(f"strategy {name!r} is already registered")
    spec = StrategySpec(name, factory, settings, plugins, template)
    _SPECS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a strategy (tests register throw-away ones)."""
    _SPECS.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered strategy, in registration order."""
    return tuple(_SPECS)


def get(name: str) -> StrategySpec:
    """The strategy registered as ``name``; ValueError listing the valid names."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(map(repr, _SPECS))}") from None


def settings_models() -> list[type[BaseModel]]:
    """The strategies' settings models, each once, leaving out one another strategy's extends."""
    models = list(dict.fromkeys(spec.settings for spec in _SPECS.values() if spec.settings is not None))
    return [m for m in models if not any(o is not m and issubclass(o, m) for o in models)]


def build_learner(settings: LearnerSettings, model: TextClassifier) -> Learner:
    """The learner named by ``settings.strategy`` around ``model`` (with LoRA adapters attached
    first when ``settings.adapter`` is ``lora``: every strategy trains them)."""
    if settings.adapter == "lora":
        from learners.lora import attach_lora

        attach_lora(
            model,
            settings.trainable_layers,
            settings.lora_targets,
            settings.lora_rank,
            settings.lora_alpha,
            settings.lora_lr,
            settings.seed,
        )
    return get(settings.strategy).factory(settings, model)


def fine_tune_args(settings: LearnerSettings) -> dict[str, Any]:
    """The optimizer settings every fine-tuning learner takes."""
    return {
        "lr": settings.lr,
        "head_lr": settings.head_lr,
        "trainable_layers": settings.trainable_layers,
        "seed": settings.seed,
        "frozen_precision": settings.frozen_precision,
    }
