"""``mas``: Memory Aware Synapses (Aljundi et al. 2018): importances from the sensitivity of
the output, a penalty on moving important weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from learners.strategies._avalanche import AvalancheLearner


class MASSettings(BaseModel):
    mas_lambda: float = Field(1.0, ge=0, le=1e9, description="mas: weight of the memory-aware-synapses penalty")
    mas_alpha: float = Field(0.5, ge=0, le=1, description="mas: share of the old importances kept per experience")


def _plugins(learner: AvalancheLearner, options: MASSettings) -> list[Any]:
    from avalanche.training.plugins import MASPlugin

    from learners.strategies._avalanche_parts import Component, Tensors, params_load, params_state

    class MAS(MASPlugin, Component):  # type: ignore[misc]
        """Avalanche's MAS, without its check that refuses a loss of exactly zero."""

        key = "mas"

        def before_backward(self, strategy: Any, **kwargs: Any) -> None:
            if not strategy.clock.train_exp_counter or not self.importance or not self.params:
                return
            penalty = sum(
                (self.importance[name].expand(p.shape) * (p - self.params[name].expand(p.shape)).pow(2)).sum()
                for name, p in strategy.model.named_parameters()
                if name in self.importance
            )
            strategy.loss += self._lambda * penalty

        def state(self) -> tuple[dict[str, Any], Tensors]:
            if not self.importance or not self.params:
                return {}, {}
            tensors = params_state("mas.importance", self.importance)
            tensors.update(params_state("mas.anchor", self.params))
            return {"names": list(self.importance), "anchors": list(self.params)}, tensors

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            if meta:
                self.importance = params_load("mas.importance", meta["names"], tensors)
                self.params = params_load("mas.anchor", meta["anchors"], tensors)

    return [MAS(lambda_reg=options.mas_lambda, alpha=options.mas_alpha)]


register_avalanche("mas", _plugins, MASSettings)
