"""Plain incremental fine-tuning: one optimizer step per micro-batch (the ``naive`` learner)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from learners.base import Example, Learner
from learners.lora import adapters_of, frozen_for_training
from learners.model import TextClassifier

#: The optimizer's moments of a fine-tuning learner (safetensors; see optimizer_tensors).
OPTIMIZER_FILE = "finetune.safetensors"


def make_optimizer(
    model: TextClassifier, lr: float, head_lr: float, weight_decay: float, lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW over the head (``head_lr``) and the trainable encoder layers (``lr``), both times
    ``lr_scale``, and LoRA adapters if attached (their own rate); each group remembers its
    configured rate as ``base``."""
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": list(model.head.parameters()), "lr": head_lr * lr_scale, "base": head_lr}]
    if encoder:
        groups.append({"params": encoder, "lr": lr * lr_scale, "base": lr})
    adapters = adapters_of(model)
    if adapters is not None:
        groups.append({"params": list(adapters.parameters()), "lr": adapters.lr * lr_scale, "base": adapters.lr})
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def scale_lrs(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group of a :func:`make_optimizer` optimizer to ``factor`` times its base rate."""
    for group in optimizer.param_groups:
        group["lr"] = group["base"] * factor


def optimizer_tensors(optimizer: torch.optim.Optimizer, named: Iterable[tuple[str, Tensor]]) -> dict[str, Tensor]:
    """The optimizer's per-parameter state as ``optimizer.<parameter name>:<key>`` tensors."""
    out: dict[str, Tensor] = {}
    for name, p in named:
        for k, v in optimizer.state.get(p, {}).items():
            out[f"optimizer.{name}:{k}"] = v if isinstance(v, Tensor) else torch.tensor(float(v))
    return out


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, named: Iterable[tuple[str, Tensor]], tensors: Mapping[str, Tensor]
) -> None:
    """Put back what :func:`optimizer_tensors` saved, for the parameters whose shapes still match."""
    for name, p in named:
        prefix = f"optimizer.{name}:"
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if state and all(v.shape == p.shape for k, v in state.items() if k != "step"):
            optimizer.state[p] = state


def run_frozen_at(model: TextClassifier, trainable_layers: int, precision: str) -> None:
    """``STREAMCL_FROZEN_PRECISION``: with ``int8``, the training passes run the frozen layers
    as int8 copies (learners/quantize.py); ``fp32`` changes nothing."""
    if precision == "int8":
        from learners.quantize import int8_frozen_layers

        int8_frozen_layers(model, trainable_layers)
    elif precision != "fp32":
        raise ValueError(f"unknown frozen-layer precision {precision!r}; valid: fp32, int8")


class FineTuneLearner(Learner):
    """Fine-tunes the top ``trainable_layers`` of the encoder and the head with AdamW.

    The encoder stays in eval mode (no dropout): the logits of the training forward pass,
    taken before the update, are then exactly the prequential prediction.
    """

    name = "naive"
    exact_resume = True

    def __init__(
        self,
        model: TextClassifier,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        trainable_layers: int = 2,
        weight_decay: float = 0.01,
        seed: int = 0,
        frozen_precision: str = "fp32",
    ) -> None:
        self.model = model
        self.lr = lr
        self.head_lr = head_lr
        self.trainable_layers = trainable_layers
        self.weight_decay = weight_decay
        self.seed = seed
        self.frozen_precision = frozen_precision
        self.lr_scale = 1.0
        torch.manual_seed(seed)
        frozen_for_training(model, trainable_layers)
        run_frozen_at(model, trainable_layers, frozen_precision)
        model.eval()
        self._loss = nn.CrossEntropyLoss()
        self._optimizer = self._make_optimizer()
        self._served: Tensor = torch.zeros(0, 0)  # the last step's prequential logits (known labels)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model, self.lr, self.head_lr, self.weight_decay, self.lr_scale)

    def set_lr_scale(self, factor: float) -> bool:
        self.lr_scale = factor
        scale_lrs(self._optimizer, factor)
        return True

    def learn(self, batch: Sequence[Example]) -> list[str | None]:
        return self._step(batch, ())

    def _step(self, batch: Sequence[Example], extra: Sequence[Example]) -> list[str | None]:
        """One optimizer step on ``batch`` and ``extra`` (for example replayed examples);
        returns the predictions for ``batch`` made before the step."""
        if not batch:
            return []
        model = self.model
        known = list(model.labels)
        if model.grow([ex.label for ex in batch]):
            self._optimizer = self._make_optimizer()  # the head's parameters changed
        examples = [*batch, *extra]
        enc = model.tokenize([ex.text for ex in examples])
        logits = model(**enc)
        with torch.no_grad():
            # Prequential: the prediction of the model as it was before this batch, so a
            # label it had not seen yet cannot be predicted.
            self._served = model.served_logits(logits.detach())[: len(batch), : len(known)]
            if known:
                best = self._served.argmax(-1).tolist()
                preds: list[str | None] = [known[i] for i in best]
            else:
                preds = [None] * len(batch)
        index = {label: i for i, label in enumerate(model.labels)}
        target = torch.tensor([index[ex.label] for ex in examples])
        loss = self._objective(logits, target, len(batch))
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return preds

    def _objective(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        """The loss of one step; the first ``n_new`` rows are the new examples."""
        return self._loss(logits, target)  # type: ignore[no-any-return]

    def _trained(self) -> list[tuple[str, Tensor]]:
        adapters = adapters_of(self.model)
        extra: list[tuple[str, Tensor]] = []
        if adapters is not None:  # the adapters' moments are the optimizer's state too
            extra = [(f"lora.{n}", p) for n, p in adapters.named_parameters()]
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad] + extra

    def save_state(self, folder: Path) -> None:
        """The optimizer's moments (a resumed learner takes the very same next step)."""
        tensors = optimizer_tensors(self._optimizer, self._trained())
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(folder / OPTIMIZER_FILE))

    def load_state(self, folder: Path) -> None:
        path = folder / OPTIMIZER_FILE
        if path.is_file():
            load_optimizer_tensors(self._optimizer, self._trained(), load_file(str(path)))
