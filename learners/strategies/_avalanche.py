"""Avalanche's continual-learning strategies behind streamcl's :class:`~learners.base.Learner`.

Every micro-batch is trained at once as an Avalanche online sub-experience (one epoch of a
``SupervisedTemplate``, or of the strategy's own template, with the strategy's plugins); every
``window`` examples close an experience, and the plugins' end-of-experience updates
(importances, anchors, the distillation teacher, the memories) run over that window. With one
micro-batch per experience the anchors and the teacher would be the weights of the step before,
and the penalties of EWC, SI, MAS and LwF would have no effect. What else streamcl changes
around Avalanche, and why:

* The prequential predictions come from the first training forward pass (the model before
  its step), as in ``FineTuneLearner``, not from a pass of their own.
* The model Avalanche sees is ``Packed``: the ``TextClassifier`` taking token ids and mask as
  one ``[B, 2, L]`` tensor (Avalanche calls ``model(x)``), kept in eval mode (no dropout, as
  ``FineTuneLearner``) and exposing only the parameters that train, so importances, anchors
  and projected gradients cover the trained layers, not the frozen ones.
* The head grows through ``TextClassifier.grow`` (saved models stay loadable); the learner
  grows the optimizer's moments with it, and the plugins' per-parameter state grows with
  zeros for the new rows (``ParamData.expand``).
* Per-experience set-up is cut to what the algorithm needs: one optimizer for the whole
  stream, no model adaptation, no evaluation stream or loggers, an unshuffled loader.
* Memories are :class:`~learners.memory.ReplayMemory` objects drawing from one random source
  the learner seeds and saves (``memory``); they hold examples, packed when sampled.
* State is saved as JSON and safetensors (never Avalanche's pickled checkpoints), and with
  it the random state: a resumed learner continues exactly as the original would.

The strategies themselves are the files beside this one (``register_avalanche``).
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from learners.base import Example, Learner
from learners.finetune import load_optimizer_tensors, make_optimizer, optimizer_tensors, run_frozen_at, scale_lrs
from learners.lora import frozen_for_training
from learners.memory import ReplayMemory, rng_state, set_rng_state
from learners.model import TextClassifier
from learners.strategies._avalanche_parts import Component, Packed, Tensors, dataset, grow, pack
from learners.strategies._registry import StrategySpec, get

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
    from avalanche.benchmarks.scenarios.generic_scenario import EagerCLStream
    from avalanche.benchmarks.scenarios.online import OnlineCLExperience
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate
    from avalanche.training.utils import trigger_plugins

log = logging.getLogger(__name__)

STATE_JSON = "avalanche.json"
STATE_TENSORS = "avalanche.safetensors"
#: 2: memories as JSON rows (``learners.memory``) and their own random state.
FORMAT = 2


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


class Streaming:
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


class _Template(Streaming, SupervisedTemplate):  # type: ignore[misc]
    pass


@dataclass(slots=True)
class _Item:
    example: Example
    x: Tensor  # packed [2, L]


class AvalancheLearner(Learner):
    """A registered Avalanche strategy over a stream of micro-batches.

    ``learn`` predicts the batch with the labels known before it, grows the head for new
    labels, and trains on the batch at once (one Avalanche online sub-experience, mini-batches
    of ``batch_size``); every ``window`` examples (0: every micro-batch) closes an experience,
    and the strategy consolidates over it. ``options`` holds the strategy's own settings (its
    registered settings model), which its ``plugins`` and ``template`` read.
    """

    exact_resume = True

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
        options: BaseModel | None = None,
        frozen_precision: str = "fp32",
    ) -> None:
        spec = get(strategy)
        if spec.plugins is None and spec.template is None:
            raise ValueError(f"strategy {strategy!r} is not an Avalanche strategy")
        self.model = model
        self.name = self.strategy = strategy
        self.lr, self.head_lr, self.weight_decay = lr, head_lr, weight_decay
        self.trainable_layers, self.seed = trainable_layers, seed
        self.frozen_precision = frozen_precision
        self.batch_size, self.window = batch_size, window
        self.options = options if options is not None else spec.options(object())
        self.lr_scale = 1.0

        frozen_for_training(model, trainable_layers)
        run_frozen_at(model, trainable_layers, frozen_precision)
        model.eval()
        self.packed = Packed(model)
        self._optimizer = make_optimizer(model, lr, head_lr, weight_decay)
        self._rng_state = torch.Generator().manual_seed(seed).get_state()
        self._memory_rng = random.Random(seed)
        self._window: list[_Item] = []  # trained on, not yet consolidated
        self._stream = EagerCLStream("train", [])
        self._prequential = _Prequential()
        self._components: list[Component] = []
        self._strategy = self._make_strategy(spec)

    def memory(self, size: int, policy: str, fraction: float = 1.0) -> ReplayMemory:
        """A replay memory drawing from the learner's saved random source (for plugins)."""
        return ReplayMemory(size, fraction, policy, self._memory_rng)

    def _make_strategy(self, spec: StrategySpec) -> Any:
        plugins: list[Any] = [self._prequential]
        if spec.plugins is not None:
            plugins += spec.plugins(self, self.options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no loggers": evaluation is off on purpose
            common: dict[str, Any] = {
                "model": self.packed,
                "optimizer": self._optimizer,
                "criterion": nn.CrossEntropyLoss(),
                "train_mb_size": self.batch_size,
                "train_epochs": 1,
                "device": "cpu",
                "plugins": plugins,
                "evaluator": EvaluationPlugin(),
                "eval_every": -1,
            }
            template = _Template(**common) if spec.template is None else spec.template(self, self.options, **common)
        self._components = [p for p in [*plugins, template] if isinstance(p, Component)]
        return template

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
                    k: grow(v, p_new.shape) if isinstance(v, Tensor) and v.shape == p_old.shape else v
                    for k, v in state.items()
                }

    def _train(self, batch: Sequence[Example], x: Tensor) -> None:
        """One online sub-experience over ``batch`` (packed: ``x``); the window's experience
        when it closes. Experiences carry their examples as ``items`` (for the memories)."""
        items = [_Item(ex, x[i]) for i, ex in enumerate(batch)]
        first = not self._window
        self._window.extend(items)
        last = len(self._window) >= max(1, self.window)
        clock = self._strategy.clock
        window: Any = None
        if last:
            window = DatasetExperience(dataset=self._dataset(self._window), current_experience=clock.train_exp_counter)
            window.origin_stream = self._stream
            window.items, self._window = [it.example for it in self._window], []
        sub = OnlineCLExperience(
            dataset=self._dataset(items),
            origin_experience=window,
            is_first_subexp=first,
            is_last_subexp=last,
            access_task_boundaries=True,
        )
        sub.current_experience = clock.train_iterations
        sub.origin_stream = self._stream
        sub.items = list(batch)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Using a non-tuple sequence", UserWarning)  # Avalanche's ParamData
            self._strategy.train(sub, eval_streams=[])

    def _dataset(self, items: Sequence[_Item]) -> Any:
        return dataset(self.model, [it.example for it in items], torch.stack([it.x for it in items]))

    # state ----------------------------------------------------------------------------------
    def save_state(self, folder: Path) -> None:
        clock = self._strategy.clock
        meta: dict[str, Any] = {
            "format": FORMAT,
            "strategy": self.strategy,
            "clock": {k: getattr(clock, k) for k in ("train_exp_counter", "train_iterations", "total_iterations")},
            # rows end with the id (erasure finds them by it); ``window_ids`` lets a load tell
            # which rows an erasure took out, so the window's tensors (DER's logits) follow
            "window": [[ex.text, ex.label, ex.domain, ex.id] for ex in (it.example for it in self._window)],
            "window_ids": [it.example.id for it in self._window],
            "memory_rng": rng_state(self._memory_rng),
            "components": {},
        }
        tensors: Tensors = {"rng": self._rng_state}
        tensors.update(optimizer_tensors(self._optimizer, self.packed.named_parameters()))
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
        if "memory_rng" in meta:
            set_rng_state(self._memory_rng, meta["memory_rng"])
        for k, v in meta["clock"].items():
            setattr(self._strategy.clock, k, int(v))
        examples = [Example(str(r[0]), str(r[1]), r[2], r[3] if len(r) > 3 else None) for r in meta.get("window", [])]
        _keep_window_rows(tensors, meta.get("window_ids"), examples)
        xs = pack(self.model, [ex.text for ex in examples]) if examples else None
        self._window = [_Item(ex, xs[i]) for i, ex in enumerate(examples)] if xs is not None else []
        load_optimizer_tensors(self._optimizer, self.packed.named_parameters(), tensors)
        for component in self._components:
            component.load(meta["components"].get(component.key, {}), tensors, self)


def _keep_window_rows(tensors: Tensors, saved: list[str | None] | None, examples: list[Example]) -> None:
    """Take the rows an erasure took out of the window (``saved``: the window's ids as saved;
    ``examples``: its rows as loaded, in order) out of the window's tensors (``<key>.window.*``,
    a row each: DER's recorded logits) too, so they stay aligned. Rows without an id match the
    next saved row without one."""
    if saved is None or len(saved) == len(examples):
        return
    kept, j = [], 0
    for i, id_ in enumerate(saved):
        if j < len(examples) and examples[j].id == id_:
            kept.append(i)
            j += 1
    index = torch.tensor(kept, dtype=torch.long)
    for name, t in list(tensors.items()):
        if name.split(".")[1:2] == ["window"] and t.shape[0] == len(saved):
            tensors[name] = t.index_select(0, index)


__all__ = ["FORMAT", "STATE_JSON", "STATE_TENSORS", "AvalancheLearner", "Streaming"]
