"""One chaos session: ``streamcl up`` under constant load, faults injected one after another
(recovery measured after each), then the load stopped and one audit.

Recovery of a fault: seconds from its end (a killed broker: from the kill) until a version
newer than every version at that moment is served (``GET /v1/model``) and the learner's lag
(``streamcl_learner_lag``) is back under its bound (``STREAMCL_BACKLOG_MAX``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from chaoslib.audit import Audit, TopicReader, audit
from chaoslib.faults import Fault, metric
from chaoslib.harness import Harness, HarnessConfig, http_json
from chaoslib.load import LoadGen, LoadStats
from chaoslib.poison import check_poisons

__all__ = ["Context", "Fault", "FaultResult", "SessionReport", "run_session"]


@dataclass
class Context:
    """What a fault may act on."""

    harness: Harness
    load: LoadGen
    poisons: dict[tuple[str, int], str] = field(default_factory=dict)
    step_errors_during_poison: float | None = None


@dataclass
class FaultResult:
    name: str
    notes: dict[str, Any]
    fault_s: float
    recovery_s: float | None  # None: not recovered within the wait
    error: str | None = None
    at_s: float | None = None  # when it started, in seconds from the load's start (the load's timeline)


@dataclass
class SessionReport:
    broker: str
    faults: list[FaultResult]
    load: LoadStats
    audit: Audit | None
    poison: dict[str, Any] | None
    exit_code: int | None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "faults": [f.__dict__ for f in self.faults],
            "load": self.load.summary(),
            "audit": self.audit.summary() if self.audit else None,
            "poison": self.poison,
            "exit_code": self.exit_code,
            "error": self.error,
        }


def serving_version(api: str) -> int | None:
    try:
        return int(http_json(api + "/v1/model")["serving"]["version"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def newest_version(api: str) -> int:
    try:
        return max(int(v["version"]) for v in http_json(api + "/v1/model/versions")["versions"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0


def wait_recovered(ctx: Context, since: float, baseline: int, lag_bound: float, timeout_s: float) -> float | None:
    """Seconds from ``since`` until a version newer than ``baseline`` is served and the lag is under its bound."""
    api = ctx.harness.api
    while time.monotonic() - since < timeout_s:
        served = serving_version(api)
        lag = metric(ctx, "streamcl_learner_lag")
        if served is not None and served > baseline and lag is not None and lag <= lag_bound:
            return round(time.monotonic() - since, 1)
        time.sleep(1.0)
    return None


def wait_serving_beyond(api: str, version: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        served = serving_version(api)
        if served is not None and served > version:
            return
        time.sleep(1.0)


def _inject(ctx: Context, fault: Fault, lag_bound: float, recovery_timeout_s: float) -> FaultResult:
    baseline = newest_version(ctx.harness.api)
    started = time.monotonic()
    at = round(started - ctx.load.stats.started, 1)
    try:
        notes = fault.inject(ctx)
    except Exception as exc:
        took = round(time.monotonic() - started, 1)
        return FaultResult(fault.name, {}, took, None, f"{type(exc).__name__}: {exc}", at)
    ended = time.monotonic()
    since = started if fault.measure_from == "start" else ended
    baseline = max(baseline, newest_version(ctx.harness.api))
    recovery = wait_recovered(ctx, since, baseline, lag_bound, recovery_timeout_s)
    return FaultResult(fault.name, notes, round(ended - started, 1), recovery, at_s=at)


def run_session(
    config: HarnessConfig,
    faults: list[Fault],
    rate: float = 50.0,
    per_request: int = 5,
    warmup_s: float = 60.0,
    recovery_timeout_s: float = 180.0,
    settle_s: float = 240.0,
    duplicate: bool = False,
    lag_bound: float = 5000.0,
    load_before_s: float = 30.0,
    load_after_s: float = 30.0,
) -> SessionReport:
    """Start the platform, load it (at least ``load_before_s`` before the first fault and
    ``load_after_s`` after the last recovery), inject ``faults`` in order, stop the load, audit, stop."""
    harness = Harness(config)
    results: list[FaultResult] = []
    load: LoadGen | None = None
    report = SessionReport(config.kind, results, LoadStats(), None, None, None)
    try:
        harness.start()
        load = LoadGen(harness.api, rate=rate, per_request=per_request, run=config.run_dir.name).start()
        load.duplicate = duplicate
        ctx = Context(harness, load)
        wait_serving_beyond(harness.api, 1, warmup_s)  # a first trained version is served
        time.sleep(max(0.0, load.stats.started + load_before_s - time.monotonic()))
        for fault in faults:
            results.append(_inject(ctx, fault, lag_bound, recovery_timeout_s))
        time.sleep(load_after_s)  # traffic after the recovery is audited too
        report.load = load.stop()
        load = None
        reader = TopicReader(harness.bootstrap)
        try:
            report.audit = audit(reader, harness.state_dir / "registry", report.load.accepted, settle_s)
            if ctx.poisons:
                report.poison = check_poisons(ctx.poisons, reader.dead)
                report.poison["step_errors"] = ctx.step_errors_during_poison
        finally:
            reader.close()
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}\n{harness.log_tail(3000)}"
    finally:
        if load is not None:
            report.load = load.stop(drain_s=5.0)
        report.exit_code = harness.stop()
    return report
