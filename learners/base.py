"""streamcl's learner interface: one method that predicts a micro-batch, then trains on it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from learners.model import TextClassifier


@dataclass(frozen=True, slots=True)
class Example:
    """One labeled example as a learner sees it."""

    text: str
    label: str
    domain: str | None = None


class Learner(ABC):
    """Learns from a stream of micro-batches. Constructor arguments are its settings; learned
    state lives in ``model`` and ``_underscored`` attributes."""

    model: TextClassifier
    name: str = "learner"

    @abstractmethod
    def learn(self, batch: Sequence[Example]) -> list[str | None]:
        """Predict every example *before* training on it (prequential), then train.

        Returns the predictions made before the update, in order.
        """

    def set_lr_scale(self, factor: float) -> bool:
        """Scale the learning rates to ``factor`` times the configured ones (drift adaptation);
        False when this learner has no learning rate to scale."""
        return False

    def save_state(self, folder: Path) -> None:
        """Write the learner's own state (beyond the model's weights) into a version folder,
        as JSON or safetensors (never pickle)."""
        return None

    def load_state(self, folder: Path) -> None:
        """Resume the state :meth:`save_state` wrote (a folder without it: start fresh)."""
        return None

    def predict(self, texts: Sequence[str]) -> list[str | None]:
        return [p.label for p in self.model.predict(texts)]
