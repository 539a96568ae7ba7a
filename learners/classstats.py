"""Exact class statistics on the frozen encoder layers: a head that forgets nothing.

Every example the learner trains on adds its embedding to running sums: per label the sum and
the count, and over all examples the sum of outer products (float64). The embedding is the
mean-pooled output of the *last frozen* encoder layer (``TextClassifier.frozen_pooled``),
taken from the training forward pass at no extra cost. Those layers never change, so the
statistics stay exact for the whole stream: class means and a shared covariance, and from them
a linear discriminant (LDA with a shrunk covariance, as in Deep SLDA, Hayes & Kanan, CVPRW
2020). It does not depend on the order of the stream nor on which labels came first, so a
label trained long ago keeps its place however much the fine-tuned layers move.

The model serves the sum of the fine-tuned head's and the discriminant's log-probabilities
(``TextClassifier.stats_head``): where fine-tuning still knows a label it dominates, where it
forgot, the statistics carry it. Kept in a version: ``class_stats.safetensors`` (the sums:
8 bytes x (d x d + C x d + C), 1.2 MB for MiniLM's d = 384 plus 3 KB per label) and, in the
model's own weights, the discriminant (4 bytes x C x (d + 1)).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

if TYPE_CHECKING:
    from learners.model import TextClassifier

STATE_FILE = "class_stats.safetensors"
#: Temperatures the served scores are calibrated over (a grid: the argmax never changes).
TEMPERATURES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)


class ClassStatistics:
    """Running class sums, counts and the sum of outer products of frozen-layer embeddings,
    and the linear discriminant they define (see the module)."""

    def __init__(self, dim: int, shrinkage: float = 0.1) -> None:
        self.dim = dim
        self.shrinkage = shrinkage
        self.labels: list[str] = []
        self.sums = torch.zeros(0, dim, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)
        self.nll = torch.zeros(len(TEMPERATURES), dtype=torch.float64)  # prequential, per temperature

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def add(self, embeddings: Tensor, labels: Sequence[str]) -> None:
        """Count ``embeddings`` (one row per example) under ``labels``."""
        if embeddings.shape[0] != len(labels):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(labels)} labels")
        if not labels:
            return
        new = [label for label in dict.fromkeys(labels) if label not in self.labels]
        if new:
            self.labels.extend(new)
            self.sums = torch.cat([self.sums, torch.zeros(len(new), self.dim, dtype=torch.float64)])
            self.counts = torch.cat([self.counts, torch.zeros(len(new), dtype=torch.float64)])
        x = embeddings.detach().to(torch.float64)
        index = {label: i for i, label in enumerate(self.labels)}
        rows = torch.tensor([index[label] for label in labels])
        self.sums.index_add_(0, rows, x)
        self.counts.index_add_(0, rows, torch.ones(len(labels), dtype=torch.float64))
        self.scatter += x.T @ x

    def calibrate(self, served: Tensor, target: Tensor) -> float:
        """Add the log-loss at every temperature of ``served`` logits, taken *before* training on
        their examples (``target``: label positions), and return the temperature with the least
        log-loss so far: the served scores' calibration, learned prequentially."""
        if served.shape[0]:
            x = served.detach().to(torch.float64)
            for i, t in enumerate(TEMPERATURES):
                self.nll[i] += torch.nn.functional.cross_entropy(x / t, target, reduction="sum")
        return TEMPERATURES[int(self.nll.argmin())] if bool(self.nll.any()) else 1.0

    def discriminant(self, labels: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(weight C x d, bias C) of the linear discriminant over ``labels`` (the model's head
        order): equal priors, the pooled within-class covariance shrunk towards its mean
        variance. A label without statistics gets a bias of -1e4 (never chosen over one with)."""
        weight = torch.zeros(len(labels), self.dim, dtype=torch.float64)
        bias = torch.full((len(labels),), -1e4, dtype=torch.float64)
        known = self.counts > 0
        if int(known.sum()) == 0:
            return weight.float(), bias.float()
        means = self.sums[known] / self.counts[known].unsqueeze(1)
        n = self.total
        cov = (self.scatter - (self.counts[known].unsqueeze(1) * means).T @ means) / max(1.0, n - len(means))
        target = (torch.trace(cov) / self.dim).clamp(min=1e-12)
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * target * eye
        w = torch.linalg.solve(cov, means.T).T
        b = -0.5 * (w * means).sum(1)
        where = {label: i for i, label in enumerate(label for label, k in zip(self.labels, known.tolist()) if k)}
        rows = [row for row, label in enumerate(labels) if label in where]
        if rows:
            src = torch.tensor([where[labels[row]] for row in rows])
            weight[rows], bias[rows] = w[src], b[src]
        return weight.float(), bias.float()

    # state ----------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        tensors = {"sums": self.sums, "counts": self.counts, "scatter": self.scatter, "nll": self.nll}
        meta = {"labels": json.dumps(self.labels, ensure_ascii=False), "dim": str(self.dim)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / STATE_FILE), metadata=meta)

    def load(self, folder: Path) -> bool:
        """Put back what :meth:`save` wrote; False when ``folder`` has none (or another size)."""
        path = folder / STATE_FILE
        if not path.is_file():
            return False
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if int(meta.get("dim", -1)) != self.dim:
            return False
        tensors = load_file(str(path))
        labels = [str(label) for label in json.loads(meta.get("labels", "[]"))]
        if tensors["sums"].shape != (len(labels), self.dim):
            return False
        self.labels = labels
        self.sums, self.counts, self.scatter = tensors["sums"], tensors["counts"], tensors["scatter"]
        if tensors.get("nll") is not None and tensors["nll"].shape == self.nll.shape:
            self.nll = tensors["nll"]
        return True


def attach_class_stats(
    model: TextClassifier, trainable_layers: int, weight: float, shrinkage: float
) -> ClassStatistics | None:
    """Statistics over the frozen bottom layers of ``model``, served beside its head with
    ``weight``; None when ``weight`` is 0 or no encoder layer stays frozen
    (``trainable_layers`` -1)."""
    if weight <= 0 or trainable_layers < 0:
        return None
    depth = model.encoder_depth() - trainable_layers
    if depth <= 0:
        return None
    model.use_stats_head(depth, weight)
    return ClassStatistics(model.head.in_features, shrinkage)


def refresh_discriminant(model: TextClassifier, stats: ClassStatistics) -> None:
    """Write the discriminant of ``stats`` into ``model.stats_head``. While a label of the
    head has no statistics (a learner resumed from a version without them), the discriminant
    is flat (all zeros) so that it cannot push that label down."""
    head = model.stats_head
    if head is None:
        return
    weight, bias = stats.discriminant(model.labels)
    if not set(model.labels) <= set(stats.labels):
        weight, bias = torch.zeros_like(weight), torch.zeros_like(bias)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)


__all__ = ["STATE_FILE", "TEMPERATURES", "ClassStatistics", "attach_class_stats", "refresh_discriminant"]
