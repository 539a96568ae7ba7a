"""``replay-lwf``: Avalanche's experience replay (its replay loader mixing the memory into every
mini-batch) together with LwF's distillation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from learners.memory import ReplaySettings, replay_ratio
from learners.strategies._avalanche_registry import register_avalanche
from learners.strategies.lwf import LwFSettings, lwf_plugin

if TYPE_CHECKING:
    from learners.strategies._avalanche import AvalancheLearner


class ReplayLwFSettings(LwFSettings, ReplaySettings):
    pass


def _replay_plugin(learner: AvalancheLearner, options: ReplaySettings) -> Any:
    """Avalanche's replay plugin over a :class:`~learners.memory.ReplayMemory`, the window's
    examples added when it closes."""
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.storage_policy import ExemplarsBuffer

    from learners.strategies._avalanche_parts import Component, Tensors, dataset, load_memory

    memory = learner.memory(options.replay_buffer, options.replay_policy, options.replay_fraction)

    class Storage(ExemplarsBuffer):  # type: ignore[misc]
        """Avalanche's storage-policy interface over the memory (its dataset packed once per change)."""

        def __init__(self) -> None:
            super().__init__(memory.size)
            self._cached: Any = None

        @property
        def buffer(self) -> Any:
            if not len(memory):
                return self._buffer  # Avalanche's empty dataset
            if self._cached is None:
                self._cached = dataset(learner.model, memory.items)
            return self._cached

        @buffer.setter
        def buffer(self, value: Any) -> None:
            self._cached = value

        def update(self, strategy: Any, **kwargs: Any) -> None:
            memory.extend(strategy.experience.items)
            self._cached = None

        def resize(self, strategy: Any, new_size: int) -> None:
            raise NotImplementedError("the replay buffer has a fixed size")

    class Plugin(ReplayPlugin, Component):  # type: ignore[misc]
        key = "replay"

        def state(self) -> tuple[dict[str, Any], Tensors]:
            return memory.state(), {}

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            load_memory(memory, meta, self.key)
            self.storage_policy.buffer = None

    mem_batch = max(1, round(learner.batch_size * replay_ratio(options.replay_ratio, "replay-lwf")))
    return Plugin(
        mem_size=memory.size, batch_size=learner.batch_size, batch_size_mem=mem_batch, storage_policy=Storage()
    )


def _plugins(learner: AvalancheLearner, options: ReplayLwFSettings) -> list[Any]:
    return [_replay_plugin(learner, options), lwf_plugin(options.lwf_alpha, options.lwf_temperature)]


register_avalanche("replay-lwf", _plugins, ReplayLwFSettings)
