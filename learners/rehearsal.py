"""Rehearsal learners: fine-tuning where every micro-batch is trained together with a few
examples drawn from a bounded buffer of the stream so far.

* ``replay``: experience replay, plain cross-entropy over new and replayed examples.
* ``er-ace``: experience replay with the asymmetric cross-entropy of ER-ACE (Caccia et al.,
  ICLR 2022, "New insights on reducing abrupt representation change in online continual
  learning"). A new example competes only against the labels present in its own micro-batch,
  so a burst of a new label does not push the old labels' logits down; replayed examples
  compete against every label. This is what keeps old classes alive on class-incremental
  streams with a small buffer and a small replay share, where plain replay forgets them.

The buffer is a :class:`~learners.memory.ReplayMemory`: at most ``buffer_size`` examples *and*
at most ``buffer_fraction`` of the examples streamed so far, kept by ``replay_policy``. Buffer,
random state and optimizer moments are part of every version (``replay.json`` and
``finetune.safetensors``), so a restarted learner continues exactly as it would have.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from learners.base import Example
from learners.classstats import attach_class_stats, refresh_discriminant
from learners.finetune import FineTuneLearner
from learners.memory import ReplayMemory, rng_state, set_rng_state
from learners.model import TextClassifier

STATE_FILE = "replay.json"


class ReplayLearner(FineTuneLearner):
    """Fine-tuning plus a replay buffer (see the module): each step trains on the new
    micro-batch and ``replay_ratio`` times as many replayed examples (rounded at random, so
    the ratio holds on average)."""

    name = "replay"

    def __init__(
        self,
        model: TextClassifier,
        buffer_size: int = 2000,
        buffer_fraction: float = 0.1,
        replay_ratio: float = 0.25,
        replay_policy: str = "domain_class_balanced",
        logit_alpha: float = 1.0,
        class_stats_weight: float = 0.0,
        class_stats_shrinkage: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.class_stats_weight = class_stats_weight
        self.class_stats_shrinkage = class_stats_shrinkage
        self._stats = attach_class_stats(model, self.trainable_layers, class_stats_weight, class_stats_shrinkage)
        self.logit_alpha = logit_alpha
        self.buffer_size = buffer_size
        self.buffer_fraction = buffer_fraction
        self.replay_ratio = replay_ratio
        self.replay_policy = replay_policy
        self._rng = random.Random(self.seed)
        self._buffer = ReplayMemory(buffer_size, buffer_fraction, replay_policy, self._rng)
        self._replayed_logits: list[list[float] | None] = []
        self._new_logits: Tensor | None = None

    def learn(self, batch: Sequence[Example]) -> list[str | None]:
        if not batch:
            return []
        wanted = len(batch) * self.replay_ratio
        k = math.floor(wanted) + (self._rng.random() < wanted - math.floor(wanted))
        chosen = self._buffer.sample(k)
        self._replayed_logits = [self._buffer.logits[i] for i in chosen]
        preds = self._step(batch, [self._buffer.items[i] for i in chosen])
        if self._stats is not None:
            self._update_stats(batch)
        stored = self._new_logits.tolist() if self.logit_alpha and self._new_logits is not None else None
        for i, ex in enumerate(batch):
            self._buffer.add(ex, stored[i] if stored else None)
        return preds

    def _update_stats(self, batch: Sequence[Example]) -> None:
        """Count the new examples in the class statistics, calibrate the served scores on their
        prequential logits, and write the new discriminant into the model."""
        assert self._stats is not None
        known = {label: i for i, label in enumerate(self.model.labels[: self._served.shape[1]])}
        rows = [i for i, ex in enumerate(batch) if ex.label in known]
        if rows and self._served.shape[1] > 1:
            target = torch.tensor([known[batch[i].label] for i in rows])
            self.model.score_temperature = self._stats.calibrate(self._served[rows], target)
        self._stats.add(self.model.frozen_pooled()[: len(batch)], [ex.label for ex in batch])
        refresh_discriminant(self.model, self._stats)

    def _objective(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        """The label loss, plus ``logit_alpha`` times the mean squared distance between the
        replayed examples' logits and the ones stored with them (over the labels known then:
        dark experience replay, Buzzega et al., NeurIPS 2020)."""
        self._new_logits = logits[:n_new].detach()
        loss = self._label_loss(logits, target, n_new)
        pairs = [(n_new + j, lg) for j, lg in enumerate(self._replayed_logits) if lg]
        if self.logit_alpha and pairs:
            terms = [F.mse_loss(logits[row, : len(lg)], torch.tensor(lg)) for row, lg in pairs]
            loss = loss + self.logit_alpha * torch.stack(terms).mean()
        return loss

    def _label_loss(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        return F.cross_entropy(logits, target)

    def save_state(self, folder: Path) -> None:
        super().save_state(folder)
        if self._stats is not None:
            self._stats.save(folder)
        state = {**self._buffer.state(), "rng": rng_state(self._rng)}
        (folder / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    def load_state(self, folder: Path) -> None:
        super().load_state(folder)
        if self._stats is not None and self._stats.load(folder):
            refresh_discriminant(self.model, self._stats)
        path = folder / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        self._buffer.load(state)
        if "rng" in state:
            set_rng_state(self._rng, state["rng"])


class ERACELearner(ReplayLearner):
    """Experience replay with the asymmetric cross-entropy of ER-ACE (see the module)."""

    name = "er-ace"

    def _label_loss(self, logits: Tensor, target: Tensor, n_new: int) -> Tensor:
        new, replayed = logits[:n_new], logits[n_new:]
        present = torch.zeros(logits.shape[1], dtype=torch.bool)
        present[target[:n_new]] = True
        losses = F.cross_entropy(new.masked_fill(~present, float("-inf")), target[:n_new], reduction="sum")
        if replayed.shape[0]:
            losses = losses + F.cross_entropy(replayed, target[n_new:], reduction="sum")
        return losses / target.shape[0]
