"""``lwf``: Learning without Forgetting (Li & Hoiem 2016): distill the outputs of a frozen copy
of the model from the end of the last window into the current one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from learners.strategies._avalanche import AvalancheLearner


class LwFSettings(BaseModel):
    lwf_alpha: float = Field(1.0, ge=0, le=100, description="lwf, replay-lwf: weight of the distillation loss")
    lwf_temperature: float = Field(2.0, gt=0, le=100, description="lwf, replay-lwf: distillation temperature")


def lwf_plugin(alpha: float, temperature: float) -> Any:
    """Avalanche's LwF plugin with a teacher updated in place (no deep copy of the whole model
    per experience), always in eval mode, saved as the teacher's trained parameters."""
    from avalanche.training.plugins import LwFPlugin
    from avalanche.training.regularization import LearningWithoutForgetting
    from torch import nn

    from learners.strategies._avalanche_parts import Component, Packed, Tensors, params_state, set_parameter, teacher

    class LwF(LearningWithoutForgetting):  # type: ignore[misc]
        prev_model: Packed | None

        def post_adapt(self, agent: Any, exp: Any) -> None:
            self.expcount += 1
            self.prev_model = teacher(agent.model, self.prev_model)
            self.prev_classes_by_task[0].update(int(c) for c in exp.dataset.targets.uniques)

    class Plugin(LwFPlugin, Component):  # type: ignore[misc]
        key = "lwf"

        def __init__(self) -> None:
            super().__init__(alpha, temperature)
            self.lwf = LwF(alpha, temperature)

        def state(self) -> tuple[dict[str, Any], Tensors]:
            old: Any = self.lwf.prev_model
            if old is None:
                return {}, {}
            trained = {name: p for name, p in nn.Module.named_parameters(old) if name in old.copied}
            return {
                "experiences": self.lwf.expcount,
                "classes": sorted(self.lwf.prev_classes_by_task[0]),
                "names": list(trained),
            }, params_state("lwf.teacher", trained)

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            if not meta:
                return
            self.lwf.expcount = int(meta["experiences"])
            self.lwf.prev_classes_by_task[0] = {int(c) for c in meta["classes"]}
            made = teacher(learner.packed, None)
            for name in meta["names"]:
                set_parameter(made, name, tensors[f"lwf.teacher.{name}"].clone())
            self.lwf.prev_model = made

    return Plugin()


def _plugins(learner: AvalancheLearner, options: LwFSettings) -> list[Any]:
    return [lwf_plugin(options.lwf_alpha, options.lwf_temperature)]


register_avalanche("lwf", _plugins, LwFSettings)
