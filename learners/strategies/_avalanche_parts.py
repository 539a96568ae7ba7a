"""What the Avalanche strategy files build on: the packed model Avalanche calls, tensors made
from examples when they are trained or sampled, and the state a plugin saves.

Importing this module imports Avalanche (seconds): only an Avalanche strategy being built does.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

import torch
from torch import Tensor, nn

from learners.base import Example
from learners.memory import ReplayMemory
from learners.model import TextClassifier

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
    from avalanche.training.utils import ParamData

if TYPE_CHECKING:
    from learners.strategies._avalanche import AvalancheLearner

log = logging.getLogger(__name__)

Tensors = dict[str, Tensor]


# model --------------------------------------------------------------------------------------
def pack(model: TextClassifier, texts: Sequence[str]) -> Tensor:
    """Token ids and attention mask as one ``[N, 2, max_length]`` tensor (fixed length, so
    replayed and new examples stack)."""
    enc = model.tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=model.max_length, return_tensors="pt"
    )
    return torch.stack([enc["input_ids"], enc["attention_mask"]], 1)


class Packed(nn.Module):
    """The classifier as Avalanche calls it: ``model(x)`` with ``x = [B, 2, L]``."""

    def __init__(self, classifier: TextClassifier, copied: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.classifier = classifier
        self.copied = copied  # a teacher's own parameters (the rest it shares with the student)

    def forward(self, x: Tensor) -> Tensor:
        mask = x[:, 1]
        n = int(mask.sum(1).max())  # right padding beyond the longest text changes nothing
        return self.classifier(x[:, 0, :n], mask[:, :n])  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> Self:
        self.training = mode
        self.classifier.eval()  # no dropout, ever: the pre-update logits are the prediction
        return self

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate):
            if p.requires_grad:
                yield name, p


def teacher(student: Packed, old: Packed | None) -> Packed:
    """A frozen copy of ``student`` for distillation that shares its frozen layers and its
    tokenizer; ``old`` is updated in place while its shapes still fit."""
    trained = dict(student.named_parameters())
    if old is not None and set(old.copied) == set(trained):
        theirs = dict(nn.Module.named_parameters(old))
        if all(theirs[name].shape == p.shape for name, p in trained.items()):
            with torch.no_grad():
                for name, p in trained.items():
                    theirs[name].copy_(p)
            return old
    classifier = student.classifier
    memo: dict[int, Any] = {id(classifier.tokenizer): classifier.tokenizer}
    memo.update({id(p): p for p in classifier.parameters() if not p.requires_grad})
    made = Packed(copy.deepcopy(classifier, memo), copied=tuple(trained))
    for p in made.classifier.parameters():
        p.requires_grad_(False)
    return made.eval()


def set_parameter(module: nn.Module, name: str, value: Tensor) -> None:
    *path, leaf = name.split(".")
    setattr(module.get_submodule(".".join(path)), leaf, nn.Parameter(value, requires_grad=False))


# tensors from examples ----------------------------------------------------------------------
def batch(model: TextClassifier, examples: Sequence[Example], x: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, y, task)`` of ``examples`` over the model's labels (``x``: packed here unless given)."""
    index = {label: i for i, label in enumerate(model.labels)}
    if x is None:
        x = pack(model, [ex.text for ex in examples])
    y = torch.tensor([index[ex.label] for ex in examples])
    return x, y, torch.zeros(len(examples), dtype=torch.long)


def dataset(model: TextClassifier, examples: Sequence[Example], x: Tensor | None = None) -> Any:
    """``examples`` as an Avalanche classification dataset."""
    x, y, _ = batch(model, examples, x)
    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y.tolist())


def padded(rows: Sequence[Sequence[float] | Tensor], width: int) -> Tensor:
    """Rows of different lengths as one ``[N, width]`` tensor, NaN where a row has no value."""
    out = torch.full((len(rows), width), float("nan"))
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row)
    return out


def grow(t: Tensor, shape: torch.Size) -> Tensor:
    """``t`` zero-padded to ``shape`` (new head rows; flattened tensors grow at the end)."""
    if t.shape == shape:
        return t
    out = torch.zeros(shape, dtype=t.dtype)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


# state --------------------------------------------------------------------------------------
def params_state(prefix: str, params: dict[str, Any]) -> Tensors:
    """Per-parameter tensors (Avalanche's ``ParamData`` or plain tensors) under ``prefix.name``."""
    return {f"{prefix}.{name}": getattr(v, "data", v) for name, v in params.items()}


def params_load(prefix: str, names: Sequence[str], tensors: Tensors) -> dict[str, ParamData]:
    return {name: ParamData(name, init_tensor=tensors[f"{prefix}.{name}"].clone()) for name in names}


def load_memory(memory: ReplayMemory, meta: dict[str, Any], key: str) -> None:
    """Resume ``memory`` from its JSON state; a state written before the one replay memory
    (``items`` rows) starts it empty, loudly."""
    if "items" in meta:
        log.warning("the version's %s memory has an older format: starting the memory empty", key)
        return
    memory.load(meta)


class Component:
    """What the learner needs from a plugin besides Avalanche's callbacks: its state (JSON
    meta and tensors, never pickle) under ``key``."""

    key = ""

    def state(self) -> tuple[dict[str, Any], Tensors]:
        return {}, {}

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        return None


__all__ = [
    "Component",
    "Packed",
    "Tensors",
    "batch",
    "dataset",
    "grow",
    "load_memory",
    "pack",
    "padded",
    "params_load",
    "params_state",
    "set_parameter",
    "teacher",
]
