"""streamcl's learner interface: one method that predicts a micro-batch, then trains on it."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learners.model import TextClassifier


@dataclass(frozen=True, slots=True)
class Example:
    """One labeled example as a learner sees it."""

    text: str
    label: str
    domain: str | None = None
    #: the event's id, when known: erasure (learners/erasure.py) finds an example's copies by it
    id: str | None = None


class Learner(ABC):
    """Learns from a stream of micro-batches. Constructor arguments are its settings; learned
    state lives in ``model`` and ``_underscored`` attributes."""

    model: TextClassifier
    name: str = "learner"
    #: True when :meth:`save_state` keeps everything the next step depends on (optimizer
    #: moments, random state), so a resumed learner continues exactly as the original would.
    exact_resume: bool = False

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

    def params(self) -> dict[str, Any]:
        """The constructor arguments besides the model, read back from the attributes of the
        same names (a learner keeps its settings under their own names)."""
        out: dict[str, Any] = {}
        for cls in type(self).__mro__:
            init = cls.__dict__.get("__init__")
            if init is None or cls in (Learner, ABC, object):
                continue
            for name, param in inspect.signature(init).parameters.items():
                if name in ("self", "model") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                out.setdefault(name, getattr(self, name))
        return out

    def clone(self, model: TextClassifier) -> Learner:
        """A fresh learner with the same settings around ``model``: nothing learned is carried
        over (buffers, importances, optimizer state)."""
        factory: Callable[..., Learner] = type(self)
        return factory(model, **self.params())
