"""Avalanche's continual-learning strategies behind streamcl's :class:`~learners.base.Learner`.

Every micro-batch is trained at once as an Avalanche online sub-experience (one epoch of a
``SupervisedTemplate``, ``DER`` for ``der``, with the strategy's plugins); every ``window``
examples close an experience, and the plugins' end-of-experience updates (importances,
anchors, the distillation teacher, the memories) run over that window. With one micro-batch
per experience the anchors and the teacher would be the weights of the step before, and the
penalties of EWC, SI, MAS and LwF would have no effect. What else streamcl changes around
Avalanche, and why:

* The prequential predictions come from the first training forward pass (the model before
  its step), as in ``FineTuneLearner``, not from a pass of their own.
* The model Avalanche sees is :class:`_Packed`: the ``TextClassifier`` taking token ids and
  mask as one ``[B, 2, L]`` tensor (Avalanche calls ``model(x)``), kept in eval mode (no
  dropout, as ``FineTuneLearner``) and exposing only the parameters that train, so
  importances, anchors and projected gradients cover the trained layers, not the frozen ones.
* The head grows through ``TextClassifier.grow`` (saved models stay loadable); the learner
  grows the optimizer's moments with it, and the plugins' per-parameter state grows with
  zeros for the new rows (``ParamData.expand``).
* Per-experience set-up is cut to what the algorithm needs: one optimizer for the whole
  stream, no model adaptation, no evaluation stream or loggers, an unshuffled loader.
* Memories are bounded whatever the stream length: A-GEM samples a fixed-size memory, GEM
  keeps a fixed number of memory groups (one gradient constraint each), DER and replay keep
  a reservoir or class-balanced buffer; EWC runs online (one importance, one anchor).
* Fixes to Avalanche 0.6: SI's snapshots alias the live weights on CPU (SI did nothing);
  MAS refuses a loss of exactly zero; LwF deep-copied the whole model per experience.
* State is saved as JSON and safetensors (never Avalanche's pickled checkpoints), and with
  it the random state: a resumed learner continues exactly as the original would.

Importing this module imports Avalanche (seconds): only ``build_learner`` does, lazily.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
    from avalanche.benchmarks.scenarios.generic_scenario import EagerCLStream
    from avalanche.benchmarks.scenarios.online import OnlineCLExperience
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import (
        AGEMPlugin,
        EvaluationPlugin,
        EWCPlugin,
        GEMPlugin,
        LwFPlugin,
        MASPlugin,
        ReplayPlugin,
        SynapticIntelligencePlugin,
    )
    from avalanche.training.regularization import LearningWithoutForgetting
    from avalanche.training.storage_policy import ExemplarsBuffer
    from avalanche.training.supervised import DER
    from avalanche.training.templates import SupervisedTemplate
    from avalanche.training.utils import ParamData, trigger_plugins

from learners.base import Example, Learner
from learners.finetune import load_optimizer_tensors, make_optimizer, optimizer_tensors, scale_lrs
from learners.model import TextClassifier
from learners.rehearsal import POLICIES, balance_key

log = logging.getLogger(__name__)

STATE_JSON = "avalanche.json"
STATE_TENSORS = "avalanche.safetensors"
FORMAT = 1

#: Strategy name -> the components it combines (``der`` is its own template).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "naive": (),
    "replay": ("replay",),
    "ewc": ("ewc",),
    "si": ("si",),
    "mas": ("mas",),
    "lwf": ("lwf",),
    "agem": ("agem",),
    "gem": ("gem",),
    "der": ("der",),
    "replay-lwf": ("replay", "lwf"),
}

Tensors = dict[str, Tensor]


# model --------------------------------------------------------------------------------------
def pack(model: TextClassifier, texts: Sequence[str]) -> Tensor:
    """Token ids and attention mask as one ``[N, 2, max_length]`` tensor (fixed length, so
    replayed and new examples stack)."""
    enc = model.tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=model.max_length, return_tensors="pt"
    )
    return torch.stack([enc["input_ids"], enc["attention_mask"]], 1)


class _Packed(nn.Module):
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


def _teacher(student: _Packed, old: _Packed | None) -> _Packed:
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
    teacher = _Packed(copy.deepcopy(classifier, memo), copied=tuple(trained))
    for p in teacher.classifier.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def _set_parameter(module: nn.Module, name: str, value: Tensor) -> None:
    *path, leaf = name.split(".")
    setattr(module.get_submodule(".".join(path)), leaf, nn.Parameter(value, requires_grad=False))


# memories -----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Item:
    example: Example
    x: Tensor  # packed [2, L]
    logits: Tensor | None = None  # DER: the logits it had when trained on


def _items_state(items: Sequence[_Item], prefix: str) -> tuple[list[list[Any]], Tensors]:
    """Items as JSON rows (text, label, domain) and, for DER, their logits as one tensor."""
    rows = [[it.example.text, it.example.label, it.example.domain] for it in items]
    widths = [int(it.logits.numel()) for it in items if it.logits is not None]
    if not widths:
        return rows, {}
    logits = torch.full((len(items), max(widths)), float("nan"))  # NaN: a label it did not have
    for i, it in enumerate(items):
        if it.logits is not None:
            logits[i, : it.logits.numel()] = it.logits
    return rows, {f"{prefix}.logits": logits}


def _items_load(rows: Sequence[Sequence[Any]], tensors: Tensors, prefix: str, model: TextClassifier) -> list[_Item]:
    examples = [Example(str(t), str(y), d) for t, y, d in rows]
    if not examples:
        return []
    xs = pack(model, [ex.text for ex in examples])
    logits = tensors.get(f"{prefix}.logits")
    if logits is None:
        return [_Item(ex, xs[i]) for i, ex in enumerate(examples)]
    return [_Item(ex, xs[i], logits[i][~torch.isnan(logits[i])].clone()) for i, ex in enumerate(examples)]


class _Memory:
    """A bounded sample of the stream: ``reservoir`` (every example so far equally likely to
    be kept) or ``class_balanced`` (an equal share per label, a reservoir within each); at most
    ``size`` examples and at most ``fraction`` of those seen so far."""

    def __init__(self, size: int, policy: str, fraction: float = 1.0) -> None:
        self.size = size
        self.policy = policy
        self.fraction = fraction
        self._groups: dict[str, list[_Item]] = {}
        self._seen: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def items(self) -> list[_Item]:
        return [it for g in self._groups.values() for it in g]

    def _key(self, item: _Item) -> str:
        return "" if self.policy == "reservoir" else balance_key(item.example, self.policy)

    def _cap(self) -> int:
        allowed = min(self.size, math.floor(self.fraction * sum(self._seen.values()) + 1e-9))
        return allowed // max(1, len(self._groups))

    def add(self, items: Sequence[_Item]) -> None:
        for it in items:
            key = self._key(it)
            if key not in self._groups:
                self._groups[key], self._seen[key] = [], 0
                cap = self._cap()
                for g in self._groups.values():  # a new label takes its share from the others
                    while len(g) > cap:
                        g.pop(int(torch.randint(len(g), ())))
            self._seen[key] += 1
            group, cap = self._groups[key], self._cap()
            if len(group) < cap:
                group.append(it)
            else:
                j = int(torch.randint(self._seen[key], ()))
                if j < cap:
                    group[j] = it

    def sample(self, k: int) -> list[_Item]:
        items = self.items()
        return [items[i] for i in torch.randperm(len(items))[:k].tolist()]

    def state(self, prefix: str) -> tuple[dict[str, Any], Tensors]:
        rows, tensors = _items_state(self.items(), prefix)
        return {"seen": self._seen, "items": rows}, tensors

    def load(self, meta: dict[str, Any], tensors: Tensors, prefix: str, model: TextClassifier) -> None:
        self._seen = {str(k): int(v) for k, v in meta.get("seen", {}).items()}
        self._groups = {key: [] for key in self._seen}  # in the order the groups were made
        for it in _items_load(meta.get("items", []), tensors, prefix, model):
            self._groups.setdefault(self._key(it), []).append(it)


def _batch(items: Sequence[_Item], labels: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
    index = {label: i for i, label in enumerate(labels)}
    x = torch.stack([it.x for it in items])
    y = torch.tensor([index[it.example.label] for it in items])
    return x, y, torch.zeros(len(items), dtype=torch.long)


def _dataset(items: Sequence[_Item], labels: Sequence[str]) -> Any:
    x, y, _ = _batch(items, labels)
    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y.tolist())


def _pad(t: Tensor, shape: torch.Size) -> Tensor:
    """``t`` zero-padded to ``shape`` (new head rows; flattened tensors grow at the end)."""
    if t.shape == shape:
        return t
    out = torch.zeros(shape, dtype=t.dtype)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def _params_state(prefix: str, params: dict[str, Any]) -> Tensors:
    """Per-parameter tensors (Avalanche's ``ParamData`` or plain tensors) under ``prefix.name``."""
    return {f"{prefix}.{name}": getattr(v, "data", v) for name, v in params.items()}


def _params_load(prefix: str, names: Sequence[str], tensors: Tensors) -> dict[str, ParamData]:
    return {name: ParamData(name, init_tensor=tensors[f"{prefix}.{name}"].clone()) for name in names}


# components: Avalanche plugins with their state as tensors and JSON ------------------------
class _Prequential(SupervisedPlugin):  # type: ignore[misc]
    """The logits of the micro-batch in the first training forward pass: the model before its
    step, as ``FineTuneLearner`` takes its predictions, without a forward pass of their own.
    Rows are found by content, as replay shuffles them in among the memory's."""

    def __init__(self) -> None:
        super().__init__()
        self._wanted: Tensor | None = None
        self.logits: Tensor | None = None

    def expect(self, x: Tensor) -> None:
        self._wanted, self.logits = x, None

    def after_forward(self, strategy: Any, **kwargs: Any) -> None:
        if self._wanted is None:
            return
        rows = {r.contiguous().numpy().tobytes(): i for i, r in enumerate(strategy.mb_x)}
        index = [rows.get(r.contiguous().numpy().tobytes()) for r in self._wanted]
        self._wanted = None
        if None not in index:
            self.logits = strategy.mb_output.detach()[index]


class _Component:
    """What the learner needs from a plugin besides Avalanche's callbacks: its state."""

    key = ""

    def state(self) -> tuple[dict[str, Any], Tensors]:
        return {}, {}

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        return None


class _Replay(ExemplarsBuffer):  # type: ignore[misc]
    """Avalanche's storage-policy interface over a bounded :class:`_Memory`."""

    def __init__(self, memory: _Memory, labels: list[str]) -> None:
        super().__init__(memory.size)
        self.memory = memory
        self._labels = labels  # the model's label list (grows in place)
        self._cached: Any = None

    @property
    def buffer(self) -> Any:
        if not len(self.memory):
            return self._buffer  # Avalanche's empty dataset
        if self._cached is None:
            self._cached = _dataset(self.memory.items(), self._labels)
        return self._cached

    @buffer.setter
    def buffer(self, value: Any) -> None:
        self._cached = value

    def update(self, strategy: Any, **kwargs: Any) -> None:
        self.memory.add(strategy.experience.items)
        self._cached = None

    def resize(self, strategy: Any, new_size: int) -> None:
        raise NotImplementedError("the replay buffer has a fixed size")


class _ReplayPlugin(ReplayPlugin, _Component):  # type: ignore[misc]
    key = "replay"

    def __init__(self, memory: _Memory, labels: list[str], batch_size: int, batch_size_mem: int) -> None:
        super().__init__(
            mem_size=memory.size,
            batch_size=batch_size,
            batch_size_mem=batch_size_mem,
            storage_policy=_Replay(memory, labels),
        )
        self.memory = memory

    def state(self) -> tuple[dict[str, Any], Tensors]:
        return self.memory.state(self.key)

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        self.memory.load(meta, tensors, self.key, learner.model)
        self.storage_policy.buffer = None


class _EWC(EWCPlugin, _Component):  # type: ignore[misc]
    """Online EWC: one decayed sum of importances and one anchor (the weights at the end of
    the last window), whatever the number of windows."""

    key = "ewc"

    def __init__(self, ewc_lambda: float, decay: float) -> None:
        super().__init__(ewc_lambda, mode="online", decay_factor=decay, keep_importance_data=False)

    def state(self) -> tuple[dict[str, Any], Tensors]:
        done = [t for t, imp in self.importances.items() if imp]
        if not done:
            return {}, {}
        last = max(done)
        tensors = _params_state("ewc.importance", self.importances[last])
        tensors.update(_params_state("ewc.anchor", self.saved_params[last]))
        return {"experience": last, "names": list(self.importances[last])}, tensors

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        if meta:
            last, names = int(meta["experience"]), meta["names"]
            self.importances[last] = _params_load("ewc.importance", names, tensors)
            self.saved_params[last] = _params_load("ewc.anchor", names, tensors)


class _MAS(MASPlugin, _Component):  # type: ignore[misc]
    key = "mas"

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        # Avalanche's penalty, without its check that refuses a loss of exactly zero
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
        tensors = _params_state("mas.importance", self.importance)
        tensors.update(_params_state("mas.anchor", self.params))
        return {"names": list(self.importance), "anchors": list(self.params)}, tensors

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        if meta:
            self.importance = _params_load("mas.importance", meta["names"], tensors)
            self.params = _params_load("mas.anchor", meta["anchors"], tensors)


def _flat_copy(model: nn.Module, target: dict[str, Any], grad: bool = False) -> None:
    for name, p in model.named_parameters():
        src = p.grad if grad else p
        target[name].data = (torch.zeros(p.numel()) if src is None else src.detach().flatten()).clone()


class _SI(SynapticIntelligencePlugin, _Component):  # type: ignore[misc]
    """Avalanche's Synaptic Intelligence, with snapshots that are copies (on CPU Avalanche's
    alias the live weights, ``.cpu()`` returning the same tensor, which makes every trajectory
    zero) and importances kept non-negative (a negative one would reward drift)."""

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
        tensors = _params_state("si.anchor", self.ewc_data[0])
        tensors.update(_params_state("si.importance", self.ewc_data[1]))
        for kind in self._KEPT:
            tensors.update(_params_state(f"si.{kind}", self.syn_data[kind]))
        return {"names": list(self.ewc_data[0])}, tensors

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        names = meta.get("names", [])
        self.ewc_data = (_params_load("si.anchor", names, tensors), _params_load("si.importance", names, tensors))
        syn: dict[str, dict[str, Any]] = {kind: _params_load(f"si.{kind}", names, tensors) for kind in self._KEPT}
        for kind in ("old_theta", "new_theta", "grad"):  # per-step scratch
            syn[kind] = {n: ParamData(n, self.ewc_data[0][n].shape) for n in names}
        self.syn_data = syn


class _LwF(LearningWithoutForgetting):  # type: ignore[misc]
    """Avalanche's LwF loss with a teacher updated in place (no deep copy of the whole model
    per experience), always in eval mode."""

    prev_model: _Packed | None

    def post_adapt(self, agent: Any, exp: Any) -> None:
        self.expcount += 1
        self.prev_model = _teacher(agent.model, self.prev_model)
        self.prev_classes_by_task[0].update(int(c) for c in exp.dataset.targets.uniques)


class _LwFPlugin(LwFPlugin, _Component):  # type: ignore[misc]
    key = "lwf"

    def __init__(self, alpha: float, temperature: float) -> None:
        super().__init__(alpha, temperature)
        self.lwf = _LwF(alpha, temperature)

    def state(self) -> tuple[dict[str, Any], Tensors]:
        teacher: Any = self.lwf.prev_model
        if teacher is None:
            return {}, {}
        trained = {name: p for name, p in nn.Module.named_parameters(teacher) if name in teacher.copied}
        return {
            "experiences": self.lwf.expcount,
            "classes": sorted(self.lwf.prev_classes_by_task[0]),
            "names": list(trained),
        }, _params_state("lwf.teacher", trained)

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        if not meta:
            return
        self.lwf.expcount = int(meta["experiences"])
        self.lwf.prev_classes_by_task[0] = {int(c) for c in meta["classes"]}
        teacher = _teacher(learner._packed, None)
        for name in meta["names"]:
            _set_parameter(teacher, name, tensors[f"lwf.teacher.{name}"].clone())
        self.lwf.prev_model = teacher


class _AGEM(AGEMPlugin, _Component):  # type: ignore[misc]
    """A-GEM over one fixed-size memory (Avalanche's keeps a buffer per experience and fails
    once experiences outnumber its sample size): every step's reference gradient comes from
    ``sample_size`` examples drawn from it."""

    key = "agem"

    def __init__(self, memory: _Memory, sample_size: int, labels: list[str]) -> None:
        super().__init__(patterns_per_experience=memory.size, sample_size=sample_size)
        self.memory = memory
        self._labels = labels

    def sample_from_memory(self) -> tuple[Tensor, Tensor, Tensor]:
        return _batch(self.memory.sample(self.sample_size), self._labels)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.memory.add(strategy.experience.items)
        self.buffers = [self.memory]  # the parent's "has a memory" test

    def state(self) -> tuple[dict[str, Any], Tensors]:
        return self.memory.state(self.key)

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        self.memory.load(meta, tensors, self.key, learner.model)
        self.buffers = [self.memory] if len(self.memory) else []


class _GEM(GEMPlugin, _Component):  # type: ignore[misc]
    """GEM with a fixed number of memory groups (Avalanche's adds a constraint, and a pass, per
    past experience): window ``t`` feeds group ``t mod groups``, each a bounded sample, and
    every step projects the gradient against one reference gradient per group."""

    key = "gem"

    def __init__(self, memories: list[_Memory], strength: float, labels: list[str]) -> None:
        super().__init__(patterns_per_experience=memories[0].size, memory_strength=strength)
        self.memories = memories
        self._labels = labels

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        grads = []
        for memory in self.memories:
            if not len(memory):
                continue
            x, y, _ = _batch(memory.items(), self._labels)
            strategy.optimizer.zero_grad()
            strategy._criterion(strategy.model(x), y).backward()
            params = strategy.model.parameters()
            grads.append(torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in params]))
        self.G = torch.stack(grads) if grads else torch.empty(0)

    @torch.no_grad()
    def after_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self.G.numel():
            super().after_backward(strategy, **kwargs)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        t = strategy.clock.train_exp_counter
        self.memories[t % len(self.memories)].add(strategy.experience.items)

    def state(self) -> tuple[dict[str, Any], Tensors]:
        metas, tensors = [], {}
        for i, memory in enumerate(self.memories):
            meta, more = memory.state(f"{self.key}.{i}")
            metas.append(meta)
            tensors.update(more)
        return {"groups": metas}, tensors

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        for i, (memory, group) in enumerate(zip(self.memories, meta.get("groups", []))):
            memory.load(group, tensors, f"{self.key}.{i}", learner.model)


# templates ----------------------------------------------------------------------------------
class _Streaming:
    """Avalanche's template for a stream (mixed in before it): every micro-batch is an online
    sub-experience, trained at once; the plugins' end-of-experience updates (importances,
    anchors, teacher, memories) run once per window, over the whole window. Per-experience
    set-up is cut to what that needs: one optimizer for the stream (the learner's, grown with
    the head), no model adaptation, no evaluation, an unshuffled loader."""

    model: Any
    adapted_dataset: Any
    train_mb_size: int
    dataloader: Any
    experience: Any

    def model_adaptation(self, model: Any = None) -> Any:
        return self.model if model is None else model

    def make_optimizer(self, **kwargs: Any) -> None:
        return None

    def make_train_dataloader(self, **kwargs: Any) -> None:
        # stream order (replay plugins replace it with a loader mixing in their memory)
        self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.train_mb_size, shuffle=False)

    def _after_training_exp(self, **kwargs: Any) -> None:
        sub = self.experience
        if not sub.is_last_subexp:
            return
        self.experience = sub.origin_experience  # the window, for what is computed over it
        trigger_plugins(self, "after_training_exp", **kwargs)
        self.experience = sub


class _Template(_Streaming, SupervisedTemplate):  # type: ignore[misc]
    pass


class _DER(_Streaming, DER, _Component):  # type: ignore[misc]
    """Avalanche's DER(++) with a bounded buffer whose logits are recorded in the training
    forward pass (as in the paper; Avalanche adds a pass after each experience). Logits of
    labels that did not exist when an example was stored are not matched."""

    key = "der"
    batch_logits: Tensor

    def __init__(self, *, memory: _Memory, labels: list[str], **kwargs: Any) -> None:
        super().__init__(mem_size=memory.size, **kwargs)
        self.memory = memory
        self.storage_policy = None  # replaced by ``memory``
        self._labels = labels
        self._recorded: list[Tensor] = []  # logits of the window so far, in order

    def _samples(self) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        while True:
            items = self.memory.sample(self.batch_size_mem)
            x, y, t = _batch(items, self._labels)
            logits = torch.full((len(items), len(self._labels)), float("nan"))
            for i, it in enumerate(items):
                assert it.logits is not None
                logits[i, : it.logits.numel()] = it.logits
            yield x, y, t, logits

    def _before_training_exp(self, **kwargs: Any) -> None:
        self.replay_loader = self._samples() if len(self.memory) >= self.batch_size_mem else None
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
            self.memory.add([_Item(it.example, it.x, logits) for it, logits in zip(window, self._recorded)])
            self._recorded = []
        _Streaming._after_training_exp(self, **kwargs)

    def state(self) -> tuple[dict[str, Any], Tensors]:
        meta, tensors = self.memory.state(self.key)
        if self._recorded:
            _, more = _items_state([_Item(Example("", ""), torch.empty(0), r) for r in self._recorded], "der.window")
            tensors.update(more)
        return meta, tensors

    def load(self, meta: dict[str, Any], tensors: Tensors, learner: AvalancheLearner) -> None:
        self.memory.load(meta, tensors, self.key, learner.model)
        recorded = tensors.get("der.window.logits")
        self._recorded = [] if recorded is None else [r[~torch.isnan(r)].clone() for r in recorded]


# the learner --------------------------------------------------------------------------------
class AvalancheLearner(Learner):
    """A named Avalanche strategy (see :data:`COMPONENTS`) over a stream of micro-batches.

    ``learn`` predicts the batch with the labels known before it, grows the head for new
    labels, and trains on the batch at once (one Avalanche online sub-experience, mini-batches
    of ``batch_size``); every ``window`` examples (0: every micro-batch) closes an experience,
    and the strategy consolidates over it: importances and anchors (EWC, SI, MAS), the
    distillation teacher (LwF), the memories (replay, A-GEM, GEM, DER). With one micro-batch
    per experience the anchors and the teacher are the weights of the step before, and the
    penalties of ewc, si, mas and lwf have no effect. Hyperparameters are named like the
    ``LearnerSettings`` fields (see there for their meaning).
    """

    exact_resume = True

    #: Constructor arguments that come straight from ``LearnerSettings`` fields of the same name.
    SETTINGS = (
        "batch_size",
        "window",
        "replay_buffer",
        "replay_fraction",
        "replay_ratio",
        "replay_policy",
        "ewc_lambda",
        "ewc_decay",
        "si_lambda",
        "mas_lambda",
        "mas_alpha",
        "lwf_alpha",
        "lwf_temperature",
        "agem_memory",
        "agem_sample",
        "gem_memory",
        "gem_groups",
        "gem_strength",
        "der_alpha",
        "der_beta",
    )

    def __init__(
        self,
        model: TextClassifier,
        strategy: str = "ewc",
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        trainable_layers: int = 2,
        weight_decay: float = 0.01,
        seed: int = 0,
        batch_size: int = 16,
        window: int = 128,
        replay_buffer: int = 2000,
        replay_fraction: float = 0.1,
        replay_ratio: float = 0.25,
        replay_policy: str = "domain_class_balanced",
        ewc_lambda: float = 100.0,
        ewc_decay: float = 0.9,
        si_lambda: float = 100.0,
        mas_lambda: float = 1.0,
        mas_alpha: float = 0.5,
        lwf_alpha: float = 1.0,
        lwf_temperature: float = 2.0,
        agem_memory: int = 256,
        agem_sample: int = 16,
        gem_memory: int = 32,
        gem_groups: int = 4,
        gem_strength: float = 0.5,
        der_alpha: float = 0.1,
        der_beta: float = 0.5,
    ) -> None:
        if strategy not in COMPONENTS:
            raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(COMPONENTS)}")
        if replay_policy not in POLICIES:
            raise ValueError(f"unknown replay_policy {replay_policy!r}; valid: {', '.join(POLICIES)}")
        self.model = model
        self.name = self.strategy = strategy
        self.lr, self.head_lr, self.weight_decay = lr, head_lr, weight_decay
        self.trainable_layers, self.seed = trainable_layers, seed
        self.batch_size, self.window = batch_size, window
        self.replay_buffer, self.replay_ratio, self.replay_policy = replay_buffer, replay_ratio, replay_policy
        self.replay_fraction = replay_fraction
        self.ewc_lambda, self.ewc_decay = ewc_lambda, ewc_decay
        self.si_lambda = si_lambda
        self.mas_lambda, self.mas_alpha = mas_lambda, mas_alpha
        self.lwf_alpha, self.lwf_temperature = lwf_alpha, lwf_temperature
        self.agem_memory, self.agem_sample = agem_memory, agem_sample
        self.gem_memory, self.gem_groups, self.gem_strength = gem_memory, gem_groups, gem_strength
        self.der_alpha, self.der_beta = der_alpha, der_beta
        self.lr_scale = 1.0

        model.freeze_below(trainable_layers)
        model.eval()
        self._packed = _Packed(model)
        self._optimizer = self._make_optimizer()
        self._rng_state = torch.Generator().manual_seed(seed).get_state()
        self._window: list[_Item] = []  # trained on, not yet consolidated
        self._stream = EagerCLStream("train", [])
        self._components: list[_Component] = []
        self._prequential = _Prequential()
        self._strategy = self._make_strategy()

    # construction ---------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model, self.lr, self.head_lr, self.weight_decay, self.lr_scale)

    def _make_strategy(self) -> Any:
        parts = COMPONENTS[self.strategy]
        labels = self.model.labels  # the live list: label indices only ever get appended
        mem_batch = max(1, round(self.batch_size * self.replay_ratio))
        plugins: list[Any] = [self._prequential]
        for part in parts:
            if part == "replay":
                memory = _Memory(self.replay_buffer, self.replay_policy, self.replay_fraction)
                plugins.append(_ReplayPlugin(memory, labels, self.batch_size, mem_batch))
            elif part == "ewc":
                plugins.append(_EWC(self.ewc_lambda, self.ewc_decay))
            elif part == "si":
                plugins.append(_SI(self.si_lambda))
            elif part == "mas":
                plugins.append(_MAS(lambda_reg=self.mas_lambda, alpha=self.mas_alpha))
            elif part == "lwf":
                plugins.append(_LwFPlugin(self.lwf_alpha, self.lwf_temperature))
            elif part == "agem":
                plugins.append(_AGEM(_Memory(self.agem_memory, self.replay_policy), self.agem_sample, labels))
            elif part == "gem":
                size = max(1, self.gem_memory // self.gem_groups)
                memories = [_Memory(size, self.replay_policy) for _ in range(self.gem_groups)]
                plugins.append(_GEM(memories, self.gem_strength, labels))
        self._components = [p for p in plugins if isinstance(p, _Component)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no loggers": evaluation is off on purpose
            common: dict[str, Any] = {
                "model": self._packed,
                "optimizer": self._optimizer,
                "criterion": nn.CrossEntropyLoss(),
                "train_mb_size": self.batch_size,
                "train_epochs": 1,
                "device": "cpu",
                "plugins": plugins,
                "evaluator": EvaluationPlugin(),
                "eval_every": -1,
            }
            if "der" not in parts:
                return _Template(**common)
            der = _DER(
                memory=_Memory(self.replay_buffer, self.replay_policy, self.replay_fraction),
                labels=labels,
                batch_size_mem=mem_batch,
                alpha=self.der_alpha,
                beta=self.der_beta,
                **common,
            )
        self._components.append(der)
        return der

    # learning -------------------------------------------------------------------------------
    def set_lr_scale(self, factor: float) -> bool:
        self.lr_scale = factor
        scale_lrs(self._optimizer, factor)
        return True

    def learn(self, batch: Sequence[Example]) -> list[str | None]:
        if not batch:
            return []
        # Prequential: the model as it was before this batch, over the labels it knew then.
        # A micro-batch that fits one training step gets them from that step's forward pass.
        known = list(self.model.labels)
        shared = bool(known) and len(batch) <= self.batch_size
        with torch.random.fork_rng(devices=[]):  # the learner's own random stream, saved with it
            torch.set_rng_state(self._rng_state)
            logits = None if shared or not known else self._logits(batch)
            self._grow([ex.label for ex in batch])
            x = pack(self.model, [ex.text for ex in batch])
            if shared:
                self._prequential.expect(x)
            self._train(batch, x)
            if shared:
                logits = self._prequential.logits
                if logits is None:
                    raise RuntimeError("the first training step did not see the whole micro-batch")
            self._rng_state = torch.get_rng_state()
        if logits is None:
            return [None] * len(batch)
        return [known[i] for i in logits[:, : len(known)].argmax(-1).tolist()]

    @torch.no_grad()
    def _logits(self, batch: Sequence[Example]) -> Tensor:
        return self.model(**self.model.tokenize([ex.text for ex in batch]))  # type: ignore[no-any-return]

    def _grow(self, labels: Sequence[str]) -> None:
        """New labels: grow the head, and the optimizer's moments with zeros for the new rows."""
        old = self.model.head
        if not self.model.grow(labels):
            return
        new = self.model.head
        swap = {id(old.weight): new.weight, id(old.bias): new.bias}
        for group in self._optimizer.param_groups:
            group["params"] = [swap.get(id(p), p) for p in group["params"]]
        for p_old, p_new in ((old.weight, new.weight), (old.bias, new.bias)):
            state = self._optimizer.state.pop(p_old, None)
            if state:
                self._optimizer.state[p_new] = {
                    k: _pad(v, p_new.shape) if isinstance(v, Tensor) and v.shape == p_old.shape else v
                    for k, v in state.items()
                }

    def _train(self, batch: Sequence[Example], x: Tensor) -> None:
        """One online sub-experience over ``batch`` (packed: ``x``); the window's experience
        when it closes."""
        items = [_Item(ex, x[i]) for i, ex in enumerate(batch)]
        first = not self._window
        self._window.extend(items)
        last = len(self._window) >= max(1, self.window)
        clock = self._strategy.clock
        window: Any = None
        if last:
            window = DatasetExperience(
                dataset=_dataset(self._window, self.model.labels), current_experience=clock.train_exp_counter
            )
            window.origin_stream = self._stream
            window.items, self._window = self._window, []
        sub = OnlineCLExperience(
            dataset=_dataset(items, self.model.labels),
            origin_experience=window,
            is_first_subexp=first,
            is_last_subexp=last,
            access_task_boundaries=True,
        )
        sub.current_experience = clock.train_iterations
        sub.origin_stream = self._stream
        sub.items = items
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Using a non-tuple sequence", UserWarning)  # Avalanche's ParamData
            self._strategy.train(sub, eval_streams=[])

    # state ----------------------------------------------------------------------------------
    def save_state(self, folder: Path) -> None:
        clock = self._strategy.clock
        rows, tensors = _items_state(self._window, "window")
        meta: dict[str, Any] = {
            "format": FORMAT,
            "strategy": self.strategy,
            "clock": {k: getattr(clock, k) for k in ("train_exp_counter", "train_iterations", "total_iterations")},
            "window": rows,
            "components": {},
        }
        tensors["rng"] = self._rng_state
        tensors.update(optimizer_tensors(self._optimizer, self._packed.named_parameters()))
        for component in self._components:
            cmeta, ctensors = component.state()
            meta["components"][component.key] = cmeta
            tensors.update(ctensors)
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(folder / STATE_TENSORS))
        (folder / STATE_JSON).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    def load_state(self, folder: Path) -> None:
        path = folder / STATE_JSON
        if not path.is_file():
            return
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("strategy") != self.strategy:
            log.warning(
                "the version's learner state is for strategy %r, not %r: starting it fresh (weights kept)",
                meta.get("strategy"),
                self.strategy,
            )
            return
        tensors = load_file(str(folder / STATE_TENSORS))
        self._rng_state = tensors["rng"]
        for k, v in meta["clock"].items():
            setattr(self._strategy.clock, k, int(v))
        self._window = _items_load(meta.get("window", []), tensors, "window", self.model)
        load_optimizer_tensors(self._optimizer, self._packed.named_parameters(), tensors)
        for component in self._components:
            component.load(meta["components"].get(component.key, {}), tensors, self)


__all__ = ["COMPONENTS", "AvalancheLearner", "pack"]
