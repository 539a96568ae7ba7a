"""Freshness: from a FeedbackEvent to the moment `/v1/predict` answers with a version that
trained on it; prints JSON.

`streamcl up --demo sentiment-drift` (embedded broker, default settings) runs for
``--seconds``. The bench reads ``streamcl.feedback`` (when each label was published) and
``streamcl.labeled`` (at which offset the joiner put each labeled example), and calls
``/v1/predict`` every ``--poll-s``; when an answer carries a version not seen before, it looks
up that version's consumed offsets, and every labeled example they cover gets its freshness:
the answer's time minus its feedback's publish time. (Every tenth example of a domain is held
out for evaluation rather than trained on; it counts as covered once consumed.)

    python bench/freshness.py [--seconds 420] [--rate 4] [--env K=V ...] [--out FILE]

``--rate`` is the demo's texts per second (each gets its feedback; default: the demo's 4);
``--env`` passes settings to `streamcl up` (for example ``STREAMCL_SERVE_PRECISION=int8``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen import percentile, platform
from report import emit

from learners.registry import VersionMeta
from services.client import Client
from streaming.events import FeedbackEvent, LabeledExample
from streaming.kafka import Consumer, offset_key
from streaming.settings import StreamSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=420.0)
    ap.add_argument("--poll-s", type=float, default=0.2)
    ap.add_argument("--rate", type=float, default=None, help="demo texts per second (default: the demo's)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="a setting for streamcl up")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    feedback_at: dict[str, float] = {}
    labeled: dict[str, tuple[str, int]] = {}  # id -> (topic:partition, offset)
    fresh: dict[str, float] = {}
    swaps: list[dict] = []
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.rate:
        env["STREAMCL_DEMO_RATE"] = str(args.rate)
    with platform(env, ("--demo", "sentiment-drift")) as ports:
        stream = StreamSettings(kafka_bootstrap=f"127.0.0.1:{ports['broker']}")
        consumer = Consumer(stream, group_id=None)
        consumer.assign([stream.topics.feedback, stream.topics.labeled])
        api = Client(f"http://127.0.0.1:{ports['api']}")
        offsets_of: dict[int, dict[str, int]] = {}
        seen_version = None
        started = time.time()
        while time.time() - started < args.seconds:
            for rec in consumer.poll(0.1, max_records=2000):
                if rec.topic == stream.topics.feedback:
                    fb = FeedbackEvent.model_validate_json(rec.value)
                    feedback_at.setdefault(fb.id, fb.ts)
                else:
                    ex = LabeledExample.model_validate_json(rec.value)
                    labeled.setdefault(ex.id, (offset_key(rec.topic, rec.partition), rec.offset))
            t = time.time()
            version = api.predict(["freshness probe"])["model_version"]
            if version != seen_version:
                if version not in offsets_of:
                    meta = next(VersionMeta.model_validate(m) for m in api.versions() if m["version"] == version)
                    offsets_of[version] = meta.offsets
                covered = offsets_of[version]
                n = 0
                for id_, (key, offset) in labeled.items():
                    if id_ not in fresh and id_ in feedback_at and offset < covered.get(key, 0):
                        fresh[id_] = t - feedback_at[id_]
                        n += 1
                swaps.append({"at_s": round(t - started, 1), "version": version, "newly_covered": n})
                seen_version = version
            time.sleep(args.poll_s)
        consumer.close()
        listed = [VersionMeta.model_validate(m) for m in api.versions()]
    values = list(fresh.values())
    result = {
        "benchmark": "freshness",
        "seconds": args.seconds,
        "demo_rate": args.rate or "default",
        "settings": env,
        "feedback_events": len(feedback_at),
        "labeled_examples": len(labeled),
        "served_after_training": len(values),
        "freshness_p50_s": round(percentile(values, 0.5), 1) if values else None,
        "freshness_p95_s": round(percentile(values, 0.95), 1) if values else None,
        "freshness_max_s": round(max(values), 1) if values else None,
        "versions_served": swaps,
        # the gate's decisions over the run: the served version rises only through promotions
        "versions_by_status": dict(Counter(m.status for m in listed)),
        "served_versions_rising": all(a["version"] < b["version"] for a, b in pairwise(swaps)),
        # the backlog policy at a high rate: labeled examples the learner left out
        "backlog_skipped": sum(m.consumed.get("backlog_skipped", 0) for m in listed),
        "versions_written": len(listed),
        "gate_seconds_p50": _p50([m.gate.gate_seconds for m in listed if m.gate]),
    }
    emit(result, args.out)


def _p50(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(percentile(known, 0.5), 3) if known else None


if __name__ == "__main__":
    main()
