"""LoRA adapters (``STREAMCL_ADAPTER=lora``): the encoder stays frozen; each target linear layer
of the adapted encoder layers learns a low-rank update ``W + (alpha / rank) * B @ A``
(Hu et al., ICLR 2022), trained with the head by any strategy.

The adapters live beside the model, not in it: a forward hook adds ``x @ A^T @ B^T`` to each
target's output while the learner trains and predicts, and the model's own weights stay the
base ones. What a version serves is the model with the updates merged (:meth:`Adapters.merged`
around the save): replicas, the gate and the registry see a plain classifier, whose delta from
its base holds only the target matrices and the heads. The adapters themselves and the base
matrices they apply to are the learner's state (:data:`STATE_FILE`), so a resumed learner goes
on training the same adapters.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from streaming.errors import RegistryError

if TYPE_CHECKING:
    from learners.model import TextClassifier

__all__ = ["STATE_FILE", "Adapters", "adapters_of", "attach_lora", "frozen_for_training", "lora_targets"]

STATE_FILE = "lora.safetensors"
_ATTACHED: weakref.WeakKeyDictionary[Any, Adapters] = weakref.WeakKeyDictionary()


def lora_targets(model: TextClassifier, layers: int) -> dict[str, list[str]]:
    """The linear layers of the top ``layers`` encoder layers (-1: all), by their short name
    (``query``, ``value``, ``dense``...): what ``STREAMCL_LORA_TARGETS`` may name."""
    from learners.model import _encoder_layers

    blocks = _encoder_layers(model.encoder)
    chosen = blocks if layers < 0 else blocks[len(blocks) - layers :] if layers else []
    found: dict[str, list[str]] = {}
    names = {id(m): n for n, m in model.named_modules()}
    for block in chosen:
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                found.setdefault(name.rsplit(".", 1)[-1], []).append(names[id(module)])
    return found


class Adapters(nn.Module):
    """Low-rank adapters on named linear layers of a model (see the module)."""

    def __init__(
        self, model: TextClassifier, modules: Sequence[str], rank: int, alpha: float, lr: float, seed: int = 0
    ) -> None:
        super().__init__()
        self.rank, self.alpha, self.lr = rank, alpha, lr
        self.scale = alpha / rank
        self.names = list(modules)
        found = dict(model.named_modules())
        self._targets: list[nn.Linear] = [found[n] for n in self.names]  # type: ignore[misc]
        generator = torch.Generator().manual_seed(seed)
        self.a = nn.ParameterList()
        self.b = nn.ParameterList()
        for linear in self._targets:
            a = torch.empty(rank, linear.in_features)
            bound = 1 / math.sqrt(linear.in_features)  # nn.Linear's own init range, as in the LoRA paper's code
            a.uniform_(-bound, bound, generator=generator)
            self.a.append(nn.Parameter(a))
            self.b.append(nn.Parameter(torch.zeros(linear.out_features, rank)))  # starts as the base model
        self._hooks = [self._hook(i, t) for i, t in enumerate(self._targets)]

    def _hook(self, i: int, linear: nn.Linear) -> Any:
        def add(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            return output + (args[0] @ self.a[i].t() @ self.b[i].t()) * self.scale

        return linear.register_forward_hook(add)

    def update(self, i: int) -> Tensor:
        return (self.b[i] @ self.a[i]) * self.scale

    @contextlib.contextmanager
    def merged(self) -> Iterator[None]:
        """The model with every update merged into its weights (and no hooks) inside the
        context; the base weights, bit for bit, after it."""
        for h in self._hooks:
            h.remove()
        base = [t.weight.detach().clone() for t in self._targets]
        try:
            with torch.no_grad():
                for i, t in enumerate(self._targets):
                    t.weight.add_(self.update(i))
            yield
        finally:
            with torch.no_grad():
                for t, w in zip(self._targets, base):
                    t.weight.copy_(w)
            self._hooks = [self._hook(i, t) for i, t in enumerate(self._targets)]

    def save(self, folder: Path) -> None:
        """The adapters and the base matrices they apply to (a version holds them merged)."""
        tensors: dict[str, Tensor] = {}
        for i, (name, t) in enumerate(zip(self.names, self._targets)):
            tensors[f"{name}.lora_a"] = self.a[i].detach().contiguous().clone()
            tensors[f"{name}.lora_b"] = self.b[i].detach().contiguous().clone()
            tensors[f"{name}.base"] = t.weight.detach().contiguous().clone()
        save_file(tensors, str(folder / STATE_FILE))

    def load(self, folder: Path) -> bool:
        """Put back saved adapters over the base matrices they were trained on (the loaded model
        holds them merged); False (fresh adapters over the merged weights) without the file."""
        path = folder / STATE_FILE
        if not path.is_file():
            return False
        tensors = load_file(str(path))
        with torch.no_grad():
            for i, (name, t) in enumerate(zip(self.names, self._targets)):
                a, b, base = (tensors.get(f"{name}.{k}") for k in ("lora_a", "lora_b", "base"))
                if a is None or b is None or base is None or a.shape != self.a[i].shape or base.shape != t.weight.shape:
                    raise RegistryError(f"{path}: no adapter of shape {tuple(self.a[i].shape)} for {name}")
                self.a[i].copy_(a)
                self.b[i].copy_(b)
                t.weight.copy_(base)
        return True


def attach_lora(
    model: TextClassifier, layers: int, targets: Sequence[str], rank: int, alpha: float, lr: float, seed: int = 0
) -> Adapters:
    """Adapters on the ``targets`` linear layers of the top ``layers`` encoder layers (-1:
    all) of ``model``; a target no such layer has is refused, naming the valid ones."""
    found = lora_targets(model, layers)
    unknown = [t for t in targets if t not in found]
    if unknown or not targets:
        raise ValueError(f"unknown LoRA targets {unknown or targets}; valid: {', '.join(sorted(found))}")
    adapters = Adapters(model, [n for t in targets for n in found[t]], rank, alpha, lr, seed)
    _ATTACHED[model] = adapters
    return adapters


def adapters_of(model: Any) -> Adapters | None:
    """The adapters attached to ``model``, if any."""
    return _ATTACHED.get(model)


def frozen_for_training(model: TextClassifier, trainable_layers: int) -> None:
    """Freeze what a learner must not train: with adapters, the whole encoder (the top
    ``trainable_layers`` learn through their adapters); without, the layers below the top ones."""
    model.freeze_below(0 if adapters_of(model) is not None else trainable_layers)


def merged(model: Any) -> contextlib.AbstractContextManager[None]:
    """:meth:`Adapters.merged` for a model with adapters, nothing otherwise."""
    adapters = adapters_of(model)
    return adapters.merged() if adapters is not None else contextlib.nullcontext()
