"""The chaos suite: each scenario starts `streamcl up` on a fresh state dir (Apache Kafka as the
embedded broker when available, two Serve replicas) under a constant load (``--rate`` texts/s
to /v1/predict with ids, every text labeled through /v1/feedback 2 s later), injects one fault,
measures recovery, stops the load and audits every accepted feedback id against
``streamcl.labeled``, the DLQ and the registry's surviving lineage. Prints a table, one row per
scenario, then the JSON.

    python bench/chaos.py [--scenario NAME ...] [--rate 50] [--out FILE] [--list]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaoslib import faults as f
from chaoslib.harness import HarnessConfig, failpoints_available, kafka_available
from chaoslib.session import SessionReport, run_session
from report import emit

#: The issue's targets: recovery within 60 s of the fault's end; a killed broker back and
#: serving new versions within 120 s of the kill.
RECOVERY_TARGET_S = 60.0
BROKER_KILL_TARGET_S = 120.0


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: Callable[[], list[f.Fault]]
    what: str
    config: dict[str, Any] = field(default_factory=dict)  # HarnessConfig fields
    duplicate: bool = False
    needs_kafka: bool = False  # meaningless on a broker that keeps nothing across a restart
    needs_failpoints: bool = False


SCENARIOS = [
    Scenario("broker-pause", lambda: [f.broker_pause(150)], "broker SIGSTOP 150 s, then SIGCONT"),
    Scenario(
        "broker-cut",
        lambda: [f.broker_cut(60)],
        "every connection to the broker cut for 60 s (TCP proxy)",
        config={"behind_proxy": True},
    ),
    Scenario(
        "broker-kill", lambda: [f.broker_kill()], "kill -9 of the broker; streamcl up restarts it", needs_kafka=True
    ),
    Scenario("joiner-kill", lambda: [f.actor_kill("joiner")], "kill -9 of the joiner"),
    Scenario(
        "learner-kill",
        lambda: [f.actor_kill("learner", random_delay_s=10)],
        "kill -9 of the learner at a random moment",
    ),
    Scenario(
        "learner-after-registry-write",
        lambda: [f.failpoint("learner.after_registry_write")],
        "learner killed after a version is durable, before its ModelEvent",
        needs_failpoints=True,
    ),
    Scenario(
        "learner-after-model-event",
        lambda: [f.failpoint("learner.after_model_event")],
        "learner killed after its ModelEvent, before the offset commit",
        needs_failpoints=True,
    ),
    Scenario(
        "controller-during-promotion",
        lambda: [f.failpoint("controller.before_pointer_write")],
        "controller killed after the gate promoted, before the pointer write",
        needs_failpoints=True,
    ),
    Scenario("replica-kill", lambda: [f.replica_kill()], "kill -9 of one Serve replica"),
    Scenario("aggregator-kill", lambda: [f.aggregator_kill()], "kill -9 of the metrics aggregator"),
    Scenario(
        "disk-full",
        lambda: [f.disk_full()],
        "the registry's disk full until a version write fails, then freed",
        config={"registry_tmpfs_mb": 1536},
    ),
    Scenario("second-learner", lambda: [f.second_learner()], "a second learner for the same model"),
    Scenario("duplicate-feedback", lambda: [f.duplicate_feedback(120)], "one client sends every feedback twice"),
    Scenario("poison", lambda: [f.poison_records()], "a poison record of each kind on texts, feedback, labeled"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def why_not(s: Scenario, report: SessionReport) -> list[str]:
    """Why a row misses the targets (empty: it meets them)."""
    why = []
    if report.error:
        why.append(report.error.splitlines()[0])
    a = report.audit
    if a is not None:
        if a.lost:
            why.append(f"{len(a.lost)} accepted feedback lost")
        if a.twice or a.trained_twice_any:
            why.append(f"{max(len(a.twice), a.trained_twice_any)} trained twice")
        if not a.settled:
            why.append("the pipeline had not taken in everything when audited")
    load = report.load
    if load.server_errors:
        why.append(f"{load.server_errors} 5xx other than 503")
    if sum(load.unanswered.values()):
        how = ", ".join(f"{k}: {n}" for k, n in sorted(load.unanswered_how.items()))
        why.append(f"{sum(load.unanswered.values())} requests unanswered within 10 s ({how})")
    target = BROKER_KILL_TARGET_S if s.name == "broker-kill" else RECOVERY_TARGET_S
    for r in report.faults:
        if r.error:
            why.append(f"{r.name}: {r.error}")
        elif r.recovery_s is None:
            why.append(f"{r.name}: not recovered")
        elif r.recovery_s > target:
            why.append(f"{r.name}: recovered in {r.recovery_s:.0f} s (target {target:.0f} s)")
        if r.notes.get("refused") is False:
            why.append("the second learner was not refused")
        if r.notes.get("fired") is False:
            why.append("the failpoint did not fire")
    if report.poison and (report.poison["missing"] or report.poison["twice"] or report.poison.get("step_errors")):
        why.append(f"poison: {report.poison}")
    if report.broker != "kafka" and s.needs_kafka:
        why.append("tansu keeps nothing across a restart: run on Apache Kafka")
    return why


def row(s: Scenario, report: SessionReport, seconds: float) -> dict[str, Any]:
    a = report.audit
    load = report.load
    recovery = [r.recovery_s for r in report.faults]
    return {
        "scenario": s.name,
        "broker": report.broker,
        "accepted": a.accepted if a else len(load.accepted),
        "lost": len(a.lost) if a else None,
        "trained_twice": max(len(a.twice), a.trained_twice_any) if a else None,
        "in_dlq": a.in_dlq if a else None,
        "5xx_not_503": load.server_errors,
        "503": load.count("feedback", lambda c: c == 503) + load.count("predict", lambda c: c == 503),
        "unanswered_10s": sum(load.unanswered.values()),
        "recovery_s": recovery[0] if len(recovery) == 1 else recovery,
        "texts_per_s": load.summary()["texts_per_s"],
        "ok": not why_not(s, report),
        "why": "; ".join(why_not(s, report)),
        "seconds": round(seconds),
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        "scenario",
        "broker",
        "accepted",
        "lost",
        "trained_twice",
        "in_dlq",
        "5xx_not_503",
        "503",
        "unanswered_10s",
        "recovery_s",
        "texts_per_s",
        "ok",
    ]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        lines.append(" | ".join(str(r[c]) for c in cols))
    lines += [f"- {r['scenario']}: {r['why']}" for r in rows if r["why"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", choices=list(BY_NAME), help="run these (default: all)")
    ap.add_argument("--rate", type=float, default=50.0, help="texts per second to /v1/predict (default 50)")
    ap.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    ap.add_argument("--workdir", type=Path, help="where each run's state and logs go (default: a temporary dir)")
    ap.add_argument("--keep", action="store_true", help="keep each run's state dir")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    args = ap.parse_args()
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:32} {s.what}")
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="streamcl-chaos-"))
    rows, runs = [], {}
    for name in args.scenario or list(BY_NAME):
        s = BY_NAME[name]
        if s.needs_failpoints and not failpoints_available():
            rows.append({"scenario": name, "ok": False, "why": "failpoints not available"})
            continue
        config = HarnessConfig(run_dir=work / name, broker_kind=args.broker, **s.config)
        started = time.monotonic()
        report = run_session(config, s.faults(), rate=args.rate, duplicate=s.duplicate)
        runs[name] = report.summary()
        rows.append(row(s, report, time.monotonic() - started))
        print(table(rows[-1:]), file=sys.stderr, flush=True)
        if not args.keep:
            from chaoslib.harness import Harness

            Harness(config).cleanup()
    print(table([r for r in rows if "broker" in r]))
    emit({"kafka_available": kafka_available(), "rate": args.rate, "rows": rows, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
