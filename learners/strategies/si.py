"""``si``: Synaptic Intelligence (Zenke et al. 2017): importances accumulated along the
training trajectory, a penalty on moving important weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from torch import nn

    from learners.strategies._avalanche import AvalancheLearner


class SISettings(BaseModel):
    si_lambda: float = Field(100.0, ge=0, le=1e9, description="si: weight of the synaptic-intelligence penalty")


def _flat_copy(model: nn.Module, target: dict[str, Any], grad: bool = False) -> None:
    import torch

    for name, p in model.named_parameters():
        src = p.grad if grad else p
        target[name].data = (torch.zeros(p.numel()) if src is None else src.detach().flatten()).clone()


def _plugins(learner: AvalancheLearner, options: SISettings) -> list[Any]:
    from avalanche.training.plugins import SynapticIntelligencePlugin
    from avalanche.training.utils import ParamData

    from learners.strategies._avalanche_parts import Component, Tensors, params_load, params_state

    class SI(SynapticIntelligencePlugin, Component):  # type: ignore[misc]
        """Avalanche's SI, with snapshots that are copies (on CPU Avalanche's alias the live
        weights, ``.cpu()`` returning the same tensor, which makes every trajectory zero) and
        importances kept non-negative (a negative one would reward drift)."""

        key = "si"
        _KEPT = ("trajectory", "cum_trajectory")  # besides the anchor and importances: the rest is per step

        def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            self.create_syn_data(strategy.model, self.ewc_data, self.syn_data, self.excluded_parameters)
            if strategy.experience.is_first_subexp:  # a new window: its start is the reference
                _flat_copy(strategy.model, self.ewc_data[0])
                for t in self.syn_data["trajectory"].values():
                    t.data.zero_()

        def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            _flat_copy(strategy.model, self.syn_data["old_theta"])

        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            syn = self.syn_data
            _flat_copy(strategy.model, syn["new_theta"])
            _flat_copy(strategy.model, syn["grad"], grad=True)
            for name in syn["trajectory"]:
                syn["trajectory"][name].data += syn["grad"][name].data * (
                    syn["new_theta"][name].data - syn["old_theta"][name].data
                )

        def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            super().after_training_exp(strategy, **kwargs)
            for imp in self.ewc_data[1].values():
                imp.data.clamp_(min=0)

        def state(self) -> tuple[dict[str, Any], Tensors]:
            tensors = params_state("si.anchor", self.ewc_data[0])
            tensors.update(params_state("si.importance", self.ewc_data[1]))
            for kind in self._KEPT:
                tensors.update(params_state(f"si.{kind}", self.syn_data[kind]))
            return {"names": list(self.ewc_data[0])}, tensors

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            names = meta.get("names", [])
            self.ewc_data = (params_load("si.anchor", names, tensors), params_load("si.importance", names, tensors))
            syn: dict[str, dict[str, Any]] = {kind: params_load(f"si.{kind}", names, tensors) for kind in self._KEPT}
            for kind in ("old_theta", "new_theta", "grad"):  # per-step scratch
                syn[kind] = {n: ParamData(n, self.ewc_data[0][n].shape) for n in names}
            self.syn_data = syn

    return [SI(options.si_lambda)]


register_avalanche("si", _plugins, SISettings)
