"""``streamcl up --state-dir DIR`` in a child process: started on free ports with two Serve
replicas, waited for until ``/readyz`` answers, its processes found by role, and stopped with
Ctrl-C (then kill), leaving no process of its own behind.

Every process ``streamcl up`` starts (the embedded broker, Ray's GCS, raylet and workers) is a
descendant of it; the harness records them as it sees them and kills, by pid, those still
alive after the stop. It never runs ``ray stop --force`` (that stops every Ray cluster on the
machine, other users' too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from chaoslib.proxy import TcpProxy
from streaming._broker_kafka import KafkaBroker
from streaming.broker import broker_binary, free_port
from streaming.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
#: Failpoints the harness lists at start, each disarmed (its ``.fired`` file exists) until a fault arms it.
FAILPOINTS = (
    "learner.after_registry_write",
    "learner.after_model_event",
    "controller.before_pointer_write",
    "joiner.after_send",
)

#: ServiceHost logs this once its service is built (streaming/runtime.py); Ray names each
#: worker's log file after its pid.
_UP_LINE = "INFO {role} is up"
_WORKER_LOG = re.compile(r"worker-[0-9a-f]+-[0-9a-f]+-(\d+)\.err$")


def kafka_available() -> bool:
    """Whether ``StreamSettings`` knows ``embedded_broker_kind`` (Apache Kafka as the embedded broker)."""
    return "embedded_broker_kind" in StreamSettings.model_fields


def failpoints_available() -> bool:
    return (ROOT / "streaming" / "failpoints.py").is_file()


@dataclass
class HarnessConfig:
    """How to start the platform for one run."""

    run_dir: Path
    broker_kind: str = "auto"  # kafka | tansu | auto (kafka when available)
    replicas: int = 2
    behind_proxy: bool = False  # the harness runs the broker itself, reached through a TCP proxy
    registry_tmpfs_mb: int = 0  # mount a tmpfs of this size as the registry (disk-full fault)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.broker_kind != "auto":
            return self.broker_kind
        return "kafka" if kafka_available() else "tansu"


class Harness:
    """One ``streamcl up`` run; use as a context manager."""

    def __init__(self, config: HarnessConfig) -> None:
        self.config = config
        self.run_dir = config.run_dir
        self.state_dir = self.run_dir / "state"
        self.failpoints_dir = self.run_dir / "failpoints"
        self.ports = {"broker": free_port(), "api": free_port(), "metrics": free_port()}
        self.api = f"http://127.0.0.1:{self.ports['api']}"
        self.metrics_url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        self.bootstrap = f"127.0.0.1:{self.ports['broker']}"  # where the harness reads the topics
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: TcpProxy | None = None
        self.own_broker: ProxiedKafka | _Tansu | None = None
        self.mounted = False
        self._seen: dict[int, float] = {}  # pid -> create_time of every descendant seen
        self._session: Path | None = None

    # start ------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        c = self.config
        env = {
            **os.environ,
            "STREAMCL_PORT": str(self.ports["api"]),
            "STREAMCL_METRICS_PORT": str(self.ports["metrics"]),
            "STREAMCL_REPLICAS": str(c.replicas),
            "STREAMCL_RAY_NUM_CPUS": "4",  # logical CPUs: 2 replicas, learner, joiner, controller, monitor
            "STREAMCL_LABELS": "negative,neutral,positive",
            "STREAMCL_GATE": "newer",  # every candidate is served: "served again" is then well defined
            "STREAMCL_VERSION_EVERY_S": "5",
            "STREAMCL_JOIN_TTL_S": "60",
            "STREAMCL_KEEP_VERSIONS": "3",
            "STREAMCL_FAILPOINTS": ",".join(FAILPOINTS),
            "STREAMCL_FAILPOINTS_DIR": str(self.failpoints_dir),
            **c.env,
        }
        env.pop("STREAMCL_KAFKA_BOOTSTRAP", None)
        env.pop("STREAMCL_STATE_DIR", None)
        if c.behind_proxy:
            env["STREAMCL_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{self.proxy.port}"  # type: ignore[union-attr]
        else:
            env["STREAMCL_EMBEDDED_BROKER"] = self.bootstrap
            if kafka_available():
                env["STREAMCL_EMBEDDED_BROKER_KIND"] = c.kind
        return env

    def start(self, ready_timeout_s: float = 400.0) -> Harness:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.failpoints_dir.mkdir(parents=True, exist_ok=True)
        for name in FAILPOINTS:  # disarmed until a fault removes its file
            (self.failpoints_dir / f"{name}.fired").touch()
        if self.config.registry_tmpfs_mb:
            self._mount_registry()
        if self.config.behind_proxy:
            self._start_own_broker()
        log = (self.run_dir / "up.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--state-dir", str(self.state_dir), "--progress-s", "10"],
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(ready_timeout_s)
        self.processes()
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"streamcl up exited ({self.proc.returncode}):\n{self.log_tail()}")
            if http_status(self.api + "/readyz") == 200:
                return
            time.sleep(1.0)
        raise TimeoutError(f"streamcl up not ready in {timeout_s:.0f}s:\n{self.log_tail()}")

    def _mount_registry(self) -> None:
        registry = self.state_dir / "registry"
        registry.mkdir(parents=True, exist_ok=True)
        size = f"size={self.config.registry_tmpfs_mb}m"
        subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(registry)], check=True)
        self.mounted = True

    def _start_own_broker(self) -> None:
        """The broker on a port of its own, advertising the proxy's address, so every client
        (whatever broker the metadata names) goes through the proxy."""
        self.proxy = TcpProxy(self.bootstrap).start()
        advertised = f"127.0.0.1:{self.proxy.port}"
        log_file = self.run_dir / "broker.log"
        if self.config.kind == "kafka":
            kafka = ProxiedKafka(self.bootstrap, self.state_dir / "kafka", log_file, advertised)
            self.own_broker = kafka
            kafka.start()
            return
        command = [broker_binary(), "broker", "--listener-url", f"tcp://{self.bootstrap}"]
        log = log_file.open("ab")
        proc = subprocess.Popen(
            [*command, "--advertised-listener-url", f"tcp://{advertised}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.own_broker = _Tansu(proc)
        wait_port(self.bootstrap, 30.0)

    # processes ---------------------------------------------------------------------------------
    def processes(self) -> list[psutil.Process]:
        """Every live descendant of ``streamcl up`` (and the harness's own broker), recorded for the stop."""
        found: list[psutil.Process] = []
        for pid in [p.pid for p in (self.proc, self.own_broker) if p is not None and p.pid is not None]:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        for p in found:
            try:
                self._seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass
        return found

    def find(self, pattern: str) -> list[int]:
        """Pids of the descendants whose command line matches ``pattern`` (a regex)."""
        out = []
        for p in self.processes():
            try:
                if re.search(pattern, " ".join(p.cmdline())):
                    out.append(p.pid)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        return out

    def broker_pid(self) -> int | None:
        if self.own_broker is not None:
            return self.own_broker.pid if self.own_broker.alive() else None
        pids = self.find(r"tansu|kafka\.Kafka")
        return pids[0] if pids else None

    def session_dir(self) -> Path:
        """The Ray session folder of this run (from the ``gcs_server`` command line)."""
        if self._session is None:
            for p in self.processes():
                try:
                    logs = re.search(r"gcs_server .*--log_dir=(\S+)", " ".join(p.cmdline()))
                except psutil.Error:
                    continue
                if logs:
                    self._session = Path(logs.group(1)).parent
                    break
            else:
                raise RuntimeError("no gcs_server among streamcl up's processes")
        return self._session

    def actor_pid(self, role: str, timeout_s: float = 120.0) -> int:
        """The live process of a service (``joiner``, ``learner``, ``controller``, ``monitor``).

        Every service runs in a ``ray::ServiceHost`` process, so command lines cannot tell them
        apart: the worker whose log says ``<role> is up`` can (asking Ray would need a second
        driver on the cluster)."""
        deadline = time.monotonic() + timeout_s
        line = _UP_LINE.format(role=role)
        while True:
            live = {p.pid for p in self.processes()}
            found = []
            for path in (self.session_dir() / "logs").glob("worker-*.err"):
                m = _WORKER_LOG.search(path.name)
                if m and int(m.group(1)) in live and line in path.read_text(errors="replace"):
                    found.append(int(m.group(1)))
            if len(found) == 1:
                return found[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(found)} live processes say '{line}'")
            time.sleep(1.0)

    def replica_pids(self) -> list[int]:
        return self.find(r"^ray::ServeReplica")

    def aggregator_pid(self) -> int | None:
        pids = self.find(r"^ray::MetricsAggregator")
        return pids[0] if pids else None

    # stop --------------------------------------------------------------------------------------
    def stop(self) -> int | None:
        """Ctrl-C, then kill after 150 s; then every recorded process still alive; the exit code."""
        code = None
        if self.proc is not None:
            self.processes()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(150)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        if self.own_broker is not None:
            self.processes()
            self.own_broker.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self._kill_leftovers()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.state_dir / "registry")], check=False)
            self.mounted = False
        return code

    def _kill_leftovers(self) -> None:
        for pid, created in self._seen.items():
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 0.01:  # the same process, not a reused pid
                    p.kill()
            except psutil.Error:
                continue

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.run_dir / "up.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cleanup(self) -> None:
        """Remove the run's state (after the audit)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)


def http_status(url: str, timeout: float = 5.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_port(address: str, timeout_s: float) -> None:
    import socket

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {address} after {timeout_s}s")


class ProxiedKafka(KafkaBroker):
    """Apache Kafka listening on ``address`` but advertising ``advertised`` (the proxy)."""

    def __init__(self, address: str, data_dir: Path, log_file: Path, advertised: str) -> None:
        super().__init__(address, data_dir, log_file=log_file)
        self.advertised = advertised

    def prepare(self) -> None:
        super().prepare()
        mine = f"advertised.listeners=PLAINTEXT://{self.advertised}"
        lines = [mine if x.startswith("advertised.") else x for x in self.config_file.read_text().splitlines()]
        self.config_file.write_text("\n".join(lines) + "\n")


class _Tansu:
    """A tansu process the harness started (advertising the proxy)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
