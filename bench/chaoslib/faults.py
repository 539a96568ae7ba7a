"""Fault injectors. Each is a :class:`Fault`: a name and a function that injects the fault,
blocks while it lasts and returns what it saw; the session measures recovery from its end.

Processes are found through the harness (the broker among ``streamcl up``'s descendants, a
service actor's pid asked of Ray) and killed by pid, never by name.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaoslib.harness import ROOT, failpoints_available
from streaming.metrics import sample_sum, sample_value

if TYPE_CHECKING:
    from chaoslib.session import Context


@dataclass(frozen=True)
class Fault:
    """``inject(ctx)`` blocks while the fault lasts and returns notes; ``measure_from`` says
    whether recovery counts from the fault's end (default) or its start (a killed broker)."""

    name: str
    inject: Callable[[Context], dict[str, Any]]
    measure_from: str = "end"


def metric(ctx: Context, name: str, **labels: str) -> float | None:
    try:
        with urllib.request.urlopen(ctx.harness.metrics_url, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sample_value(text, name, labels) if labels else sample_sum(text, name)


# the broker ------------------------------------------------------------------------------------
def broker_pause(seconds: float) -> Fault:
    """SIGSTOP the broker for ``seconds``, then SIGCONT: slow, not dead (it must be waited for)."""

    def inject(ctx: Context) -> dict[str, Any]:
        pid = ctx.harness.broker_pid()
        if pid is None:
            raise RuntimeError("no broker process found")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return {"pid": pid, "paused_s": seconds}

    return Fault(f"broker-pause-{seconds:g}s", inject)


def broker_cut(seconds: float) -> Fault:
    """Every connection to the broker cut (the proxy resets them and refuses new ones)."""

    def inject(ctx: Context) -> dict[str, Any]:
        if ctx.harness.proxy is None:
            raise RuntimeError("the broker is not behind the proxy (HarnessConfig.behind_proxy)")
        ctx.harness.proxy.cut(seconds)
        return {"cut_s": seconds}

    return Fault(f"broker-cut-{seconds:g}s", inject)


def broker_kill(wait_s: float = 120.0) -> Fault:
    """kill -9 of the broker; ``streamcl up`` must start it again on its data."""

    def inject(ctx: Context) -> dict[str, Any]:
        pid = ctx.harness.broker_pid()
        if pid is None:
            raise RuntimeError("no broker process found")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + wait_s
        new = None
        while time.monotonic() < deadline:
            new = ctx.harness.broker_pid()
            if new is not None and new != pid:
                break
            time.sleep(0.5)
        back = new is not None and new != pid
        return {"pid": pid, "restarted": back, "restart_s": round(time.monotonic() - killed, 1) if back else None}

    return Fault("broker-kill", inject, measure_from="start")


# processes -------------------------------------------------------------------------------------
def actor_kill(role: str, random_delay_s: float = 0.0) -> Fault:
    """kill -9 of a service actor's process (Ray restarts it)."""

    def inject(ctx: Context) -> dict[str, Any]:
        pid = ctx.harness.actor_pid(role)
        if random_delay_s:
            time.sleep(random.uniform(0, random_delay_s))
        os.kill(pid, signal.SIGKILL)
        return {"pid": pid}

    return Fault(f"{role}-kill", inject)


def replica_kill() -> Fault:
    def inject(ctx: Context) -> dict[str, Any]:
        pids = ctx.harness.replica_pids()
        if not pids:
            raise RuntimeError("no Serve replica process found")
        os.kill(pids[0], signal.SIGKILL)
        return {"pid": pids[0], "replicas": len(pids)}

    return Fault("replica-kill", inject)


def aggregator_kill() -> Fault:
    def inject(ctx: Context) -> dict[str, Any]:
        pid = ctx.harness.aggregator_pid()
        if pid is None:
            raise RuntimeError("no metrics aggregator process found")
        os.kill(pid, signal.SIGKILL)
        return {"pid": pid}

    return Fault("aggregator-kill", inject)


def failpoint(name: str, wait_s: float = 240.0) -> Fault:
    """Arm failpoint ``name`` (remove its ``.fired`` file): the process exits at that point once."""

    def inject(ctx: Context) -> dict[str, Any]:
        if not failpoints_available():
            raise RuntimeError("failpoints not available (streaming/failpoints.py missing)")
        fired = ctx.harness.failpoints_dir / f"{name}.fired"
        fired.unlink(missing_ok=True)
        armed = time.monotonic()
        while not fired.exists():
            if time.monotonic() - armed > wait_s:
                fired.touch()  # disarm: it did not fire
                return {"fired": False, "waited_s": wait_s}
            time.sleep(0.2)
        return {"fired": True, "after_s": round(time.monotonic() - armed, 1)}

    return Fault(f"failpoint-{name}", inject)


# the registry ----------------------------------------------------------------------------------
def disk_full(wait_s: float = 120.0) -> Fault:
    """Fill the registry's filesystem (a tmpfs: HarnessConfig.registry_tmpfs_mb) until the
    learner fails to write a version, then free it."""

    def inject(ctx: Context) -> dict[str, Any]:
        if not ctx.harness.mounted:
            raise RuntimeError("the registry is not on a tmpfs of its own (HarnessConfig.registry_tmpfs_mb)")
        registry = ctx.harness.state_dir / "registry"
        before = metric(ctx, "streamcl_service_step_errors_total", component="learner") or 0
        filler = registry / "chaos-filler.bin"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        started = time.monotonic()
        failed = False
        while time.monotonic() - started < wait_s:
            now = metric(ctx, "streamcl_service_step_errors_total", component="learner") or 0
            if now > before:
                failed = True
                break
            time.sleep(1.0)
        filler.unlink()
        return {"version_write_failed": failed, "full_s": round(time.monotonic() - started, 1)}

    return Fault("disk-full", inject)


_SECOND_LEARNER = """
import sys
from prometheus_client import CollectorRegistry
from learners.metrics import LearnerMetrics
from learners.registry import LeaseError
from learners.service import LearnerService
from learners.settings import LearnerSettings
from streaming.settings import StreamSettings
stream = StreamSettings(kafka_bootstrap=sys.argv[1], state_dir=sys.argv[2])
try:
    svc = LearnerService(stream, LearnerSettings(), LearnerMetrics(CollectorRegistry()), owner="chaos-second")
except LeaseError as exc:
    print("REFUSED", exc)
    sys.exit(0)
svc.close()
print("STARTED")
"""


def second_learner() -> Fault:
    """A second learner process for the same model: the registry's lease must refuse it."""

    def inject(ctx: Context) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_SECOND_LEARNER), ctx.harness.bootstrap, str(ctx.harness.state_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        out = (done.stdout.strip().splitlines() or [""])[-1]
        return {"refused": out.startswith("REFUSED"), "said": out[:300], "stderr": done.stderr[-300:]}

    return Fault("second-learner", inject)


# the clients -----------------------------------------------------------------------------------
def duplicate_feedback(seconds: float) -> Fault:
    """For ``seconds``, the client sends every accepted feedback a second time."""

    def inject(ctx: Context) -> dict[str, Any]:
        before = ctx.load.stats.duplicates_sent
        ctx.load.duplicate = True
        time.sleep(seconds)
        ctx.load.duplicate = False
        return {"duplicates_sent": ctx.load.stats.duplicates_sent - before}

    return Fault(f"duplicate-feedback-{seconds:g}s", inject)


def poison_records() -> Fault:
    """A poison record of each kind on the texts, feedback and labeled topics, among the load's
    good ones: each must reach the DLQ once, with a reason, and no step may fail."""
    from chaoslib.poison import publish_poisons

    def inject(ctx: Context) -> dict[str, Any]:
        errors_before = metric(ctx, "streamcl_service_step_errors_total") or 0
        ctx.poisons.update(publish_poisons(ctx.harness.bootstrap))
        time.sleep(20.0)
        errors_after = metric(ctx, "streamcl_service_step_errors_total") or 0
        ctx.step_errors_during_poison = errors_after - errors_before
        return {"poisons": len(ctx.poisons), "step_errors": errors_after - errors_before}

    return Fault("poison-records", inject)
