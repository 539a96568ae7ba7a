"""Training speed of learner variants against `naive`, measured batch by batch, interleaved in one
process (each micro-batch goes to every variant in turn), so that all see the same load on a
shared machine; prints JSON.

    python bench/learner_speed.py --data FILE.jsonl [--examples 1200] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit

from learners.base import Example
from learners.model import TextClassifier, set_threads
from learners.settings import LearnerSettings
from learners.strategies import build_learner

VARIANTS: dict[str, dict[str, object]] = {
    "naive": {"strategy": "naive"},
    "default": {},
    "default_replay_0.25": {"replay_ratio": 0.25},
    "default_no_class_stats": {"class_stats_weight": 0},
    "default_lora": {"adapter": "lora"},
    "default_fp32_frozen": {"frozen_precision": "fp32"},
    "naive_fp32_frozen": {"strategy": "naive", "frozen_precision": "fp32"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="JSONL with text, label (and domain)")
    ap.add_argument("--examples", type=int, default=1200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    set_threads(1)
    with args.data.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][: args.examples]
    random.Random(0).shuffle(rows)
    learners = {}
    for name, values in VARIANTS.items():
        settings = LearnerSettings(labels=[], **values)
        learners[name] = build_learner(settings, TextClassifier.from_encoder(None, [], settings.max_length))
    spent = dict.fromkeys(VARIANTS, 0.0)
    size = LearnerSettings().batch_size
    for i in range(0, len(rows), size):
        batch = [
            Example(r["text"], r["label"], r.get("domain", ""), str(i + j)) for j, r in enumerate(rows[i : i + size])
        ]
        for name, learner in learners.items():
            started = time.perf_counter()
            learner.learn(batch)
            spent[name] += time.perf_counter() - started
    emit(
        {
            "benchmark": "learner_speed",
            "data": str(args.data),
            "examples": len(rows),
            "examples_per_second": {k: round(len(rows) / v, 1) for k, v in spent.items()},
            "vs_naive": {k: round(spent["naive"] / v, 3) for k, v in spent.items()},
        },
        args.out,
    )


if __name__ == "__main__":
    main()
