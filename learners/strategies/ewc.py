"""``ewc``: online Elastic Weight Consolidation (Schwarz et al. 2018): a penalty keeping the
weights important to past windows near their values at the end of the last window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from learners.strategies._avalanche import AvalancheLearner


class EWCSettings(BaseModel):
    ewc_lambda: float = Field(100.0, ge=0, le=1e9, description="ewc: weight of the penalty (online EWC)")
    ewc_decay: float = Field(0.9, ge=0, le=1, description="ewc: decay of the accumulated importances per experience")


def _plugins(learner: AvalancheLearner, options: EWCSettings) -> list[Any]:
    from avalanche.training.plugins import EWCPlugin

    from learners.strategies._avalanche_parts import Component, Tensors, params_load, params_state

    class OnlineEWC(EWCPlugin, Component):  # type: ignore[misc]
        """One decayed sum of importances and one anchor (the weights at the end of the last
        window), whatever the number of windows."""

        key = "ewc"

        def state(self) -> tuple[dict[str, Any], Tensors]:
            done = [t for t, imp in self.importances.items() if imp]
            if not done:
                return {}, {}
            last = max(done)
            tensors = params_state("ewc.importance", self.importances[last])
            tensors.update(params_state("ewc.anchor", self.saved_params[last]))
            return {"experience": last, "names": list(self.importances[last])}, tensors

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            if meta:
                last, names = int(meta["experience"]), meta["names"]
                self.importances[last] = params_load("ewc.importance", names, tensors)
                self.saved_params[last] = params_load("ewc.anchor", names, tensors)

    decay = options.ewc_decay
    return [OnlineEWC(options.ewc_lambda, mode="online", decay_factor=decay, keep_importance_data=False)]


register_avalanche("ewc", _plugins, EWCSettings)
