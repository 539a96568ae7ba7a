"""Experience replay: fine-tuning where every micro-batch is trained together with as many
examples drawn from a bounded reservoir of the stream so far (the ``replay`` learner)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learners.base import Example
from learners.finetune import FineTuneLearner
from learners.model import TextClassifier

STATE_FILE = "replay.json"


class ReplayLearner(FineTuneLearner):
    """Fine-tuning plus a reservoir of ``buffer_size`` examples (every example streamed so far
    had the same chance to be kept); each step trains on the new batch and ``replay_ratio``
    times as many replayed examples. The buffer is part of every version (``replay.json``),
    so a restarted learner replays what its version had."""

    name = "replay"

    def __init__(self, model: TextClassifier, buffer_size: int = 500, replay_ratio: float = 1.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.buffer_size = buffer_size
        self.replay_ratio = replay_ratio
        self._buffer: list[Example] = []
        self._seen = 0
        self._rng = random.Random(self.seed)

    def learn(self, batch: Sequence[Example]) -> list[str | None]:
        k = min(len(self._buffer), round(len(batch) * self.replay_ratio))
        replayed = self._rng.sample(self._buffer, k) if k else []
        preds = self._step(batch, replayed)
        for ex in batch:
            self._seen += 1
            if len(self._buffer) < self.buffer_size:
                self._buffer.append(ex)
            else:
                j = self._rng.randrange(self._seen)
                if j < self.buffer_size:
                    self._buffer[j] = ex
        return preds

    def save_state(self, folder: Path) -> None:
        state = {
            "seen": self._seen,
            "buffer": [[ex.text, ex.label, ex.domain] for ex in self._buffer],
        }
        (folder / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    def load_state(self, folder: Path) -> None:
        path = folder / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        self._seen = int(state.get("seen", 0))
        self._buffer = [Example(str(t), str(y), d) for t, y, d in state.get("buffer", [])][: self.buffer_size]
