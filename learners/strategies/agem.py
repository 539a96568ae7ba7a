"""``agem``: Averaged Gradient Episodic Memory (Chaudhry et al. 2019): a step whose gradient
would raise the loss on a sample of the memory is projected so that it does not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from learners.memory import ReplaySettings
from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from torch import Tensor

    from learners.strategies._avalanche import AvalancheLearner


class AGEMSettings(ReplaySettings):
    agem_memory: int = Field(256, ge=1, le=100_000, description="agem: examples in the reference memory")
    agem_sample: int = Field(16, ge=1, le=4096, description="agem: memory examples per reference gradient")

    @model_validator(mode="after")
    def _sample_fits(self) -> Any:
        if self.agem_sample > self.agem_memory:
            raise ValueError(f"agem_sample ({self.agem_sample}) must not exceed agem_memory ({self.agem_memory})")
        return self


def _plugins(learner: AvalancheLearner, options: AGEMSettings) -> list[Any]:
    from avalanche.training.plugins import AGEMPlugin

    from learners.strategies._avalanche_parts import Component, Tensors, batch, load_memory

    memory = learner.memory(options.agem_memory, options.replay_policy)

    class AGEM(AGEMPlugin, Component):  # type: ignore[misc]
        """A-GEM over one bounded memory (Avalanche's keeps a buffer per experience and fails
        once experiences outnumber its sample size): every step's reference gradient comes
        from ``sample_size`` examples drawn from it."""

        key = "agem"

        def sample_from_memory(self) -> tuple[Tensor, Tensor, Tensor]:
            return batch(learner.model, [memory.items[i] for i in memory.sample(self.sample_size)])

        def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            memory.extend(strategy.experience.items)
            self.buffers = [memory]  # the parent's "has a memory" test

        def state(self) -> tuple[dict[str, Any], Tensors]:
            return memory.state(), {}

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            load_memory(memory, meta, self.key)
            self.buffers = [memory] if len(memory) else []

    return [AGEM(patterns_per_experience=memory.size, sample_size=options.agem_sample)]


register_avalanche("agem", _plugins, AGEMSettings)
