"""``der``: Dark Experience Replay++ (Buzzega et al., NeurIPS 2020): replayed examples are
trained on their labels and pulled toward the logits they had when they were stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from learners.memory import ReplaySettings, replay_ratio
from learners.strategies._avalanche_registry import register_avalanche

if TYPE_CHECKING:
    from torch import Tensor

    from learners.memory import ReplayMemory
    from learners.model import TextClassifier
    from learners.strategies._avalanche import AvalancheLearner


class DERSettings(ReplaySettings):
    der_alpha: float = Field(0.1, ge=0, le=100, description="der: weight of the logit-matching loss on replay")
    der_beta: float = Field(0.5, ge=0, le=100, description="der: weight of the label loss on replay (DER++)")


def _samples(memory: ReplayMemory, model: TextClassifier, k: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Endless mini-batches of ``k`` memory examples with the logits stored with them."""
    from learners.strategies._avalanche_parts import batch, padded

    while True:
        chosen = memory.sample(k)
        x, y, t = batch(model, [memory.items[i] for i in chosen])
        yield x, y, t, padded([memory.logits[i] or [] for i in chosen], len(model.labels))


def _template(learner: AvalancheLearner, options: DERSettings, **common: Any) -> Any:
    import torch
    from avalanche.training.supervised import DER

    from learners.strategies._avalanche import Streaming
    from learners.strategies._avalanche_parts import Component, Tensors, load_memory, padded

    memory = learner.memory(options.replay_buffer, options.replay_policy, options.replay_fraction)

    class DERPlusPlus(Streaming, DER, Component):  # type: ignore[misc]
        """Avalanche's DER(++) over the replay memory, with logits recorded in the training
        forward pass (as in the paper; Avalanche adds a pass after each experience). Logits of
        labels that did not exist when an example was stored are not matched."""

        key = "der"
        batch_logits: Tensor

        def __init__(self) -> None:
            mem_batch = max(1, round(learner.batch_size * replay_ratio(options.replay_ratio, "der")))
            alpha, beta = options.der_alpha, options.der_beta
            super().__init__(mem_size=memory.size, batch_size_mem=mem_batch, alpha=alpha, beta=beta, **common)
            self.storage_policy = None  # replaced by ``memory``
            self._recorded: list[Tensor] = []  # logits of the window so far, in order

        def _before_training_exp(self, **kwargs: Any) -> None:
            enough = len(memory) >= self.batch_size_mem
            self.replay_loader = _samples(memory, learner.model, self.batch_size_mem) if enough else None
            super(DER, self)._before_training_exp(**kwargs)

        def _after_forward(self, **kwargs: Any) -> None:
            new = self.mb_output
            if self.replay_loader is not None:
                old = self.mb_output[: self.batch_size_mem].detach()
                self.batch_logits = torch.where(torch.isnan(self.batch_logits), old, self.batch_logits)
                new = self.mb_output[self.batch_size_mem :]
            self._recorded.extend(new.detach())
            super()._after_forward(**kwargs)

        def _after_training_exp(self, **kwargs: Any) -> None:
            self.replay_loader = None
            if self.experience.is_last_subexp:
                window = self.experience.origin_experience.items
                memory.extend(window, [r.tolist() for r in self._recorded])
                self._recorded = []
            Streaming._after_training_exp(self, **kwargs)

        def state(self) -> tuple[dict[str, Any], Tensors]:
            tensors = {"der.window.logits": padded(self._recorded, len(learner.model.labels))} if self._recorded else {}
            return memory.state(), tensors

        def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
            load_memory(memory, meta, self.key)
            recorded = tensors.get("der.window.logits")
            self._recorded = [] if recorded is None else [r[~torch.isnan(r)].clone() for r in recorded]

    return DERPlusPlus()


register_avalanche("der", settings=DERSettings, template=_template)
