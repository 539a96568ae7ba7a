"""The cluster path on one machine, and a node lost under load.

:class:`LocalCluster` sets up what ``deploy/k8s`` runs, with real processes in place of the
operators' pods: an S3 server (moto) over HTTP for the registry, the embedded Apache Kafka broker
with several partitions, a Ray head (``ray start --head``) and a Ray worker node (``ray start
--address``), each with its own CPUs and a custom resource (``streamcl_head``, ``streamcl_worker``),
the Serve app deployed with ``serve deploy`` from ``deploy/serve/streamcl.yaml`` (what KubeRay does
with ``serveConfigV2``), and ``streamcl workers`` started against the cluster (the
``streamcl-workers`` Deployment). ``tests/e2e/test_cluster.py`` uses it; every process it starts
is killed by :meth:`LocalCluster.stop`, never any other (no ``ray stop``).

``python bench/cluster.py``: the same set-up under a constant load (``--rate`` texts/s, feedback for
each after ``--label-delay`` s); the worker node (its raylet and workers) is killed with SIGKILL at a
random moment, and a replacement node started a few seconds later, as KubeRay would. The last line
is one JSON object: ``failed_requests``, ``recovery_s`` (from the kill until every actor is alive and
a version newer than the one served at the kill is served) and ``missing_feedback`` (accepted
feedback ids in no version's ``trained``/``held_out``/``backlog_skipped`` list of the surviving lineage).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from streaming.broker import Broker, free_port, start_embedded  # noqa: E402

BIN = Path(sys.executable).parent
SERVE_FILE = ROOT / "deploy" / "serve" / "streamcl.yaml"
BUCKET = "streamcl-registry"


def http_json(
    method: str, url: str, body: Any = None, timeout: float = 30, token: str | None = None
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one call; connection errors raise OSError."""
    import urllib.error

    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(predicate: Any, timeout_s: float, what: str, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)


def cluster_serve_config(port: int, replicas: int) -> dict[str, Any]:
    """``deploy/serve/streamcl.yaml`` for two Ray nodes on one machine: the proxy on the head only
    (two proxies cannot share one port on one machine), on ``port``, loopback; ``replicas``
    replicas of Api, at most one per node, so that they run on both nodes."""
    config = yaml.safe_load(SERVE_FILE.read_text(encoding="utf-8"))
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (api,) = config["applications"][0]["deployments"]
    api.update(num_replicas=replicas, max_replicas_per_node=1)
    return config


class LocalCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent, kills only what it started)."""

    def __init__(self, root: Path, replicas: int = 2, joiners: int = 2, partitions: int = 4, **env: str) -> None:
        self.root = root
        self.replicas = replicas
        #: Ray's folder: short, for its unix sockets (a path of at most 107 bytes)
        self.ray_dir = Path(tempfile.mkdtemp(prefix="scl-ray-", dir="/tmp"))
        self.ports = {k: free_port() for k in ("gcs", "dashboard", "client", "api", "metrics", "s3", "broker")}
        self.api = f"http://127.0.0.1:{self.ports['api']}"
        self.metrics_url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        self.dashboard = f"http://127.0.0.1:{self.ports['dashboard']}"
        self.gcs = f"127.0.0.1:{self.ports['gcs']}"
        self.registry_uri = f"s3://{BUCKET}/models"
        self.env = self._environment(joiners, partitions, env)
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.s3: subprocess.Popen[bytes] | None = None
        self.workers: subprocess.Popen[bytes] | None = None
        self.broker: Broker | None = None
        self._killed: set[int] = set()
        self.workers_restarts = 0

    def _environment(self, joiners: int, partitions: int, extra: dict[str, str]) -> dict[str, str]:
        """What the ConfigMap and the Secret give every pod: the STREAMCL_* settings, S3's endpoint
        and credentials. The Ray nodes pass it on to the Serve replicas they run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMCL_", "RAY_", "AWS_"))}
        env.update(
            STREAMCL_KAFKA_BOOTSTRAP=f"127.0.0.1:{self.ports['broker']}",
            STREAMCL_TOPIC_PARTITIONS=str(partitions),
            STREAMCL_JOINERS=str(joiners),
            STREAMCL_REGISTRY_URI=self.registry_uri,
            STREAMCL_STATE_DIR=str(self.root / "state"),
            STREAMCL_METRICS_PORT=str(self.ports["metrics"]),
            STREAMCL_PORT=str(self.ports["api"]),
            STREAMCL_REPLICAS=str(self.replicas),
            STREAMCL_LEARNER_RESOURCES=json.dumps({"streamcl_worker": 1}),
            STREAMCL_LABELS="negative,neutral,positive",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.ports['s3']}",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            RAY_USAGE_STATS_ENABLED="0",
            # Ray's token authentication (GCS, dashboard, `serve deploy`), this cluster's own token
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            PYTHONPATH=str(ROOT),
        )
        env.update(extra)
        return env

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        try:
            self._start_s3()
            self._start_broker()
            self.start_head()
            self.start_worker_node()
            self.deploy_serve()
            self.start_workers()
            wait_until(self.ready, 600, "the API to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _log(self, name: str) -> Any:
        return (self.root / f"{name}.log").open("ab")

    def _start_s3(self) -> None:
        """moto's S3 server in its own process, and the registry's bucket."""
        import boto3

        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.ports["s3"])]
        self.s3 = subprocess.Popen(cmd, stdout=self._log("s3"), stderr=subprocess.STDOUT, env=self.env)
        url = self.env["AWS_ENDPOINT_URL"]
        wait_until(lambda: urllib.request.urlopen(url, timeout=2).status == 200, 60, "the S3 server")
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)

    def _start_broker(self) -> None:
        folder = self.root / "broker"
        self.broker = start_embedded(
            "kafka", self.env["STREAMCL_KAFKA_BOOTSTRAP"], folder / "kafka", folder / "broker.log"
        )

    def _ray_start(self, name: str, args: list[str]) -> None:
        """``ray start --block`` of one node: its processes are this process's descendants."""
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats"]
        cmd += ["--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(free_port()), *args]
        self.nodes[name] = subprocess.Popen(
            cmd, stdout=self._log(f"ray-{name}"), stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
        )

    def start_head(self) -> None:
        """The head: the GCS, the dashboard (``serve deploy`` talks to it, as KubeRay does), 2 CPUs."""
        self._ray_start(
            "head",
            ["--head", "--port", str(self.ports["gcs"]), "--num-cpus", "2", "--temp-dir", str(self.ray_dir),
             "--resources", json.dumps({"streamcl_head": 1}), "--include-dashboard", "true",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.ports["dashboard"]),
             "--ray-client-server-port", str(self.ports["client"])],
        )  # fmt: skip
        wait_until(lambda: self.alive_nodes() >= 1, 180, "the Ray head")

    def start_worker_node(self, name: str = "worker") -> None:
        """A worker node (2 CPUs, ``streamcl_worker``) joining the head."""
        before = self.alive_nodes()
        self._ray_start(
            name, ["--address", self.gcs, "--num-cpus", "2", "--resources", json.dumps({"streamcl_worker": 1})]
        )
        wait_until(lambda: self.alive_nodes() > before, 180, f"the Ray node {name}")

    def deploy_serve(self) -> None:
        """``serve deploy`` of the Serve file (made fit for one machine) through the dashboard."""
        path = self.root / "serve.yaml"
        path.write_text(yaml.safe_dump(cluster_serve_config(self.ports["api"], self.replicas), sort_keys=False))
        cmd = [str(BIN / "serve"), "deploy", str(path), "--address", self.dashboard]
        done = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {done.stdout}{done.stderr}")

    def start_workers(self) -> None:
        """``streamcl workers`` against the cluster (STREAMCL_RAY_ADDRESS), as the workers Deployment."""
        log = self.root / "workers.log"
        before = log.read_text().count("workers running") if log.exists() else 0
        env = {**self.env, "STREAMCL_RAY_ADDRESS": self.gcs}
        self.workers = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "workers", "--check-s", "5"],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )

        def running() -> bool:
            if self.workers is not None and self.workers.poll() is not None:
                raise RuntimeError("streamcl workers exited:\n" + log.read_text()[-5000:])
            return log.read_text().count("workers running") > before

        wait_until(running, 600, "streamcl workers to start the actors")

    # -- looking at it -------------------------------------------------------------------------

    def alive_nodes(self) -> int:
        return sum(1 for n in self.state("nodes") if n.get("state") == "ALIVE")

    def state(self, what: str, **filters: str) -> list[dict[str, Any]]:
        """Ray's state API (``actors``, ``nodes``) through the dashboard, as KubeRay's operator reads it."""
        query = "&".join(f"filter_keys={k}&filter_predicates=%3D&filter_values={v}" for k, v in filters.items())
        url = f"{self.dashboard}/api/v0/{what}?limit=1000&detail=true&{query}"
        status, body = http_json("GET", url, timeout=10, token=self.env["RAY_AUTH_TOKEN"])
        if status != 200 or not isinstance(body, dict):
            return []
        return list(body.get("data", {}).get("result", {}).get("result", []))

    def node_ids(self) -> dict[str, str]:
        """The alive nodes' ids by role (``head``, ``worker``), from their custom resources."""
        out = {}
        for n in self.state("nodes"):
            if n.get("state") != "ALIVE":
                continue
            resources = n.get("resources_total", {})
            role = "head" if "streamcl_head" in resources else "worker" if "streamcl_worker" in resources else None
            if role:
                out[role] = n["node_id"]
        return out

    def actors(self) -> list[dict[str, Any]]:
        """The alive actors: ``name``, ``class_name``, ``node_id``."""
        return [a for a in self.state("actors") if a.get("state") == "ALIVE"]

    def ready(self) -> bool:
        try:
            return http_json("GET", self.api + "/readyz", timeout=5)[0] == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return str(r.read().decode())

    # -- stopping ------------------------------------------------------------------------------

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL a node's ``ray start``, raylet and every process under it (its workers); their pids."""
        proc = self.nodes.pop(name)
        return self._kill_tree(proc.pid)

    def _kill_tree(self, pid: int) -> list[int]:
        try:
            top = psutil.Process(pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
                self._killed.add(p.pid)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        return [p.pid for p in procs]

    def leftovers(self) -> list[psutil.Process]:
        """Processes that name this cluster's Ray folder or ports and still run."""
        marks = (str(self.ray_dir), self.gcs)
        out = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                line = " ".join(p.info["cmdline"] or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if p.pid != os.getpid() and any(m in line for m in marks):
                out.append(p)
        return out

    def stop(self) -> None:
        """Kill everything started here: ``streamcl workers``, both Ray nodes (and their
        workers), the broker and the S3 server; never another Ray on the machine."""
        if self.workers is not None:
            self._kill_tree(self.workers.pid)
            self.workers = None
        for name in list(self.nodes):
            self.kill_node(name)
        for p in self.leftovers():  # a Ray process that outlived its parent (reparented to init)
            self._kill_tree(p.pid)
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.s3 is not None:
            self._kill_tree(self.s3.pid)
            self.s3 = None
        shutil.rmtree(self.ray_dir, ignore_errors=True)


# -- the bench -----------------------------------------------------------------------------------


def served_version(api: str) -> int | None:
    try:
        status, body = http_json("GET", api + "/v1/model", timeout=5)
    except OSError:
        return None
    return int(body["serving"]["version"]) if status == 200 else None


def named_actors(cluster: LocalCluster) -> set[str]:
    """The alive actors with a stable name (Serve replicas are named anew when replaced)."""
    return {a["name"] for a in cluster.actors() if a.get("name") and not a["name"].startswith("SERVE_REPLICA")}


def recovered(cluster: LocalCluster, actors_before: set[str], version_at_kill: int) -> bool:
    """Every named actor alive again, as many Serve replicas as before, and a newer version served."""
    replicas = sum(1 for a in cluster.actors() if a.get("class_name", "").startswith("ServeReplica"))
    version = served_version(cluster.api)
    return actors_before <= named_actors(cluster) and replicas >= cluster.replicas and (version or 0) > version_at_kill


def supervised(cluster: LocalCluster) -> bool:
    """Start ``streamcl workers`` again when it exited, as its Deployment would (it exits after
    three checks in a row in which its actors did not answer); True."""
    if cluster.workers is not None and cluster.workers.poll() is not None:
        cluster.workers_restarts += 1
        cluster.start_workers()
    return True


def missing_feedback(registry_uri: str, accepted: dict[str, str], env: dict[str, str]) -> list[str]:
    """Accepted feedback ids that no surviving version placed (trained, held out, backlog-skipped)."""
    from chaoslib.audit import surviving_lineage

    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    lineage = surviving_lineage(registry_uri)  # type: ignore[arg-type]
    return sorted(i for i in accepted if not lineage.placed(i))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from chaoslib.load import LoadGen

    root = Path(tempfile.mkdtemp(prefix="streamcl-cluster-"))
    env = {
        "STREAMCL_VERSION_EVERY_N": "60",
        "STREAMCL_VERSION_EVERY_S": "5",
        "STREAMCL_GATE": "newer",
        "STREAMCL_JOIN_TTL_S": "120",
        "STREAMCL_DRIFT_ENABLED": "false",
    }
    cluster = LocalCluster(root, **env)
    rng = random.Random(args.seed)
    try:
        cluster.start()
        print(f"cluster up: api {cluster.api}, metrics {cluster.metrics_url}, logs {root}", flush=True)
        load = LoadGen(cluster.api, rate=args.rate, per_request=5, label_delay_s=args.label_delay).start()
        time.sleep(rng.uniform(args.kill_after_min, args.kill_after_max))
        actors_before = named_actors(cluster)
        version_at_kill = served_version(cluster.api) or 0
        killed_at = time.monotonic()
        pids = cluster.kill_node("worker")
        print(f"killed the worker node ({len(pids)} processes) at v{version_at_kill}", flush=True)
        time.sleep(args.replace_after)
        cluster.start_worker_node("worker-2")
        try:
            wait_until(
                lambda: supervised(cluster) and recovered(cluster, actors_before, version_at_kill), 300, "recovery"
            )
            recovery_s: float | None = round(time.monotonic() - killed_at, 1)
        except TimeoutError:
            recovery_s = None
        while time.monotonic() - load.stats.started < args.seconds:
            supervised(cluster)
            time.sleep(1)
        stats = load.stop(drain_s=60)
        deadline = time.monotonic() + 240  # the learner catches up and versions what was accepted
        missing = missing_feedback(cluster.registry_uri, stats.accepted, cluster.env)
        while missing and time.monotonic() < deadline:
            time.sleep(10)
            missing = missing_feedback(cluster.registry_uri, stats.accepted, cluster.env)
        summary = stats.summary()
        failed = (
            sum(summary["unanswered_10s"].values()) + stats.server_errors + stats.count("predict", lambda c: c == 503)
        )
        return {
            "failed_requests": failed,
            "recovery_s": recovery_s,
            "missing_feedback": len(missing),
            "feedback_accepted": len(stats.accepted),
            "texts_per_s": summary["texts_per_s"],
            "statuses": summary["statuses"],
            "unanswered_how": summary["unanswered_how"],
            "workers_restarts": cluster.workers_restarts,
            "version_at_kill": version_at_kill,
            "version_at_end": served_version(cluster.api),
            "kill_after_s": round(killed_at - load.stats.started, 1),
            # answers other than 200/202 per 10 s of load (from its start): when, next to kill_after_s
            "not_ok_by_10s": {k: n for k, n in sorted(stats.timeline.items()) if not k.endswith((" 200", " 202"))},
        }
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=32.0, help="texts/s predicted (each gets feedback)")
    ap.add_argument("--label-delay", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=120.0, help="load duration")
    ap.add_argument("--kill-after-min", type=float, default=15.0)
    ap.add_argument("--kill-after-max", type=float, default=45.0)
    ap.add_argument("--replace-after", type=float, default=5.0, help="seconds until a new worker node joins")
    ap.add_argument("--seed", type=int, default=None)
    result = run(ap.parse_args())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
