"""``gem``: Gradient Episodic Memory (Lopez-Paz & Ranzato 2017): the step's gradient is
projected so that the loss on none of the memory groups rises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from learners.memory import ReplaySettings
from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from learners.strategies._avalanche import AvalancheLearner


class GEMSettings(ReplaySettings):
    gem_memory: int = Field(32, ge=1, le=10_000, description="gem: examples in the reference memory")
    gem_groups: int = Field(4, ge=1, le=64, description="gem: gradient constraints (memory groups) per step")
    gem_strength: float = Field(0.5, ge=0, le=10, description="gem: margin of the gradient projection (gamma)")

    @model_validator(mode="after")
    def _groups_fit(self) -> Any:
        if self.gem_groups > self.gem_memory:
            raise ValueError(f"gem_groups ({self.gem_groups}) must not exceed gem_memory ({self.gem_memory})")
        return self


def _plugins(learner: AvalancheLearner, options: GEMSettings) -> list[Any]:
    import torch
    from avalanche.training.plugins import GEMPlugin

    from learners.strategies._avalanche_parts import Component, Tensors, batch, load_memory

    size = max(1, options.gem_memory // options.gem_groups)
    memories = [learner.memory(size, options.replay_policy) for _ in range(options.gem_groups)]

    class GEM(GEMPlugin, Component):  # type: ignore[misc]
        """GEM with a fixed number of memory groups (Avalanche's adds a constraint, and a pass,
        per past experience): window ``t`` feeds group ``t mod groups``, each a bounded memory,
        and every step projects the gradient against one reference gradient per group."""

        key = "gem"

        def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            grads = []
            for memory in memories:
                if not len(memory):
                    continue
                x, y, _ = batch(learner.model, memory.items)
                strategy.optimizer.zero_grad()
                strategy._criterion(strategy.model(x), y).backward()
                params = strategy.model.parameters()
                grads.append(
                    torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in params])
                )
            self.G = torch.stack(grads) if grads else torch.empty(0)

        @torch.no_grad()
        def after_backward(self, strategy: Any, **kwargs: Any) -> None:
            if self.G.numel():
                super().after_backward(strategy, **kwargs)

        def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            memories[strategy.clock.train_exp_counter % len(memories)].extend(strategy.experience.items)

        def state(self) -> tuple[dict[str, Any], Tensors]:
            return {"groups": [memory.state() for memory in memories]}, {}

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            for memory, group in zip(memories, meta.get("groups", [])):
                load_memory(memory, group, self.key)

    return [GEM(patterns_per_experience=size, memory_strength=options.gem_strength)]


register_avalanche("gem", _plugins, GEMSettings)
