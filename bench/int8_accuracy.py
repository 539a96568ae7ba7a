"""Accuracy of the int8-served copy against the fp32 model on held-out data; prints JSON.

One pass of the default strategy over a scenario (as ``streamcl bench`` splits it: a seeded
test sample per domain, the rest streamed domain after domain); at every domain boundary each
domain's test set is scored by the model as trained (fp32) and by the copy replicas serve with
STREAMCL_SERVE_PRECISION=int8 (learners/quantize.py), and the agreement of the two is counted.

    python bench/int8_accuracy.py [--scenario sentiment-domains | --data FILE.jsonl] [--order domain]
                                  [--train-per-domain 300] [--test-per-domain 150] [--seed 0]
                                  [--frozen-precision fp32|int8] [--out FILE]

``--frozen-precision int8`` trains as ``STREAMCL_FROZEN_PRECISION=int8`` does (the frozen layers'
int8 copies in training passes); the model is then also scored with those copies
(``fp32_model_int8_frozen``), and the int8-served copy is the same computation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit

from learners.base import Example
from learners.bench import boundaries, resolve_strategy, split
from learners.bench._run import learner_settings
from learners.model import TextClassifier, set_threads
from learners.quantize import served_copy
from learners.strategies import build_learner
from streaming.datasets import load_rows, scenario_rows


def score(model: TextClassifier, rows: list, known: set[str]) -> tuple[list[str | None], float]:
    preds: list[str | None] = []
    for i in range(0, len(rows), 64):
        preds += [p.label for p in model.predict([r.text for r in rows[i : i + 64]])]
    return preds, sum(p == r.label and r.label in known for p, r in zip(preds, rows)) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="sentiment-domains")
    ap.add_argument("--data", type=Path, help="a JSONL or CSV stream instead of a scenario")
    ap.add_argument("--order", default="domain", choices=["domain", "time", "random"])
    ap.add_argument("--frozen-precision", default="fp32", choices=["fp32", "int8"])
    ap.add_argument("--strategy", default="default")
    ap.add_argument("--train-per-domain", type=int, default=300)
    ap.add_argument("--test-per-domain", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    source = load_rows(args.data) if args.data else scenario_rows(args.scenario)
    stream, tests, domains = split(source, args.order, args.train_per_domain, args.test_per_domain, args.seed)
    settings = learner_settings(resolve_strategy(args.strategy), args.seed)
    settings = settings.model_copy(update={"frozen_precision": args.frozen_precision})
    set_threads(settings.torch_threads)
    torch.manual_seed(args.seed)
    model = TextClassifier.from_encoder(settings.model_path, [], settings.max_length)
    learner = build_learner(settings, model)
    known: set[str] = set()
    rows: dict[str, list[list[float]]] = {"fp32": [], "int8": []}
    agree = total = pos = 0
    started = time.perf_counter()
    for bound in boundaries(stream, domains):
        while pos < bound:
            batch = stream[pos : min(bound, pos + settings.batch_size)]
            learner.learn([Example(r.text, r.label, r.domain) for r in batch])
            known.update(r.label for r in batch)
            pos += len(batch)
        served = served_copy(model, "int8")
        accs: dict[str, list[float]] = {"fp32": [], "int8": []}
        for d in domains:
            fp32, acc32 = score(model, tests[d], known)
            int8, acc8 = score(served, tests[d], known)
            accs["fp32"].append(acc32)
            accs["int8"].append(acc8)
            agree += sum(a == b for a, b in zip(fp32, int8))
            total += len(fp32)
        for k in rows:
            rows[k].append([round(a, 4) for a in accs[k]])
    final = {k: sum(m[-1]) / len(m[-1]) for k, m in rows.items()}
    emit(
        {
            "benchmark": "int8_accuracy",
            "scenario": str(args.data) if args.data else args.scenario,
            "frozen_precision": args.frozen_precision,
            "strategy": settings.strategy,
            "train_examples": len(stream),
            "test_per_domain": {d: len(tests[d]) for d in domains},
            "domains": domains,
            "final_avg_accuracy": {k: round(v, 4) for k, v in final.items()},
            "int8_minus_fp32": round(final["int8"] - final["fp32"], 4),
            "prediction_agreement": round(agree / total, 4),
            "accuracy_matrix": rows,
            "seconds": round(time.perf_counter() - started, 1),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
