"""Apache Kafka as the durable embedded broker: one KRaft node (broker and controller in one JVM)
whose data, configuration and cluster id live in one folder, so a restart on that folder keeps
every topic, record and committed offset. The jars come from ``make install`` (.venv/kafka/libs)."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from streaming._broker_proc import BrokerProcess, answers, free_port
from streaming.errors import BrokerError

log = logging.getLogger(__name__)

MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
INSTALL_HINT = "run `make install` (it fetches Apache Kafka into .venv/kafka/libs with Maven)"
#: Largest record batch the broker accepts: as large as the producers may send (streaming/_producer.py).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def kafka_home() -> Path:
    """Where ``make install`` put Apache Kafka: ``<venv>/kafka`` with ``libs/`` and its log configuration."""
    repo_venv = Path(__file__).resolve().parents[1] / ".venv" / "kafka"
    for home in (Path(sys.prefix) / "kafka", repo_venv):
        if (home / "libs").is_dir() and any((home / "libs").glob("kafka_2.13-*.jar")):
            return home
    return repo_venv


def kafka_installed() -> bool:
    """Whether Java and the Apache Kafka jars are there to start the Kafka broker."""
    return shutil.which("java") is not None and any((kafka_home() / "libs").glob("kafka_2.13-*.jar"))


def java_command(*args: str, heap_mb: int = 512) -> list[str]:
    """``java`` with the Kafka jars on the class path and streamcl's log configuration."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(f"the Kafka broker needs Java 17 or newer on PATH: {INSTALL_HINT}")
    home = kafka_home()
    if not any((home / "libs").glob("kafka_2.13-*.jar")):
        raise BrokerError(f"no Apache Kafka jars in {home / 'libs'}: {INSTALL_HINT}")
    argv = [java, f"-Xmx{heap_mb}m", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]
    for config in (home / "log4j2.properties", Path(__file__).resolve().parents[1] / "deploy/kafka/log4j2.properties"):
        if config.is_file():
            argv.append(f"-Dlog4j2.configurationFile={config}")
            break
    return [*argv, "-cp", str(home / "libs" / "*"), *args]


def new_cluster_id() -> str:
    """A 22-character cluster id as Kafka writes them (URL-safe base64 of a UUID, not starting with '-')."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def server_properties(host: str, port: int, controller_port: int, log_dir: Path) -> str:
    """The configuration of a single KRaft node serving PLAINTEXT on ``host:port``."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def _previous_controller_port(config: Path) -> int | None:
    """The controller port an earlier start wrote into ``config``."""
    try:
        for line in config.read_text().splitlines():
            if line.startswith("controller.quorum.voters="):
                return int(line.rpartition(":")[2])
    except (OSError, ValueError):
        pass
    return None


class KafkaBroker(BrokerProcess):
    """Apache Kafka on ``address`` (host:port) with its data in ``data_dir``: formatted on the first
    start (the cluster id kept in the folder), reused on every later one."""

    kind = "kafka"
    name = "Apache Kafka"
    start_timeout_s = 120.0
    stop_timeout_s = 30.0

    def __init__(
        self,
        address: str = "127.0.0.1:9092",
        data_dir: Path = Path("kafka"),
        log_file: Path | None = None,
        heap_mb: int = 512,
    ) -> None:
        super().__init__(address, log_file)
        self.data_dir = Path(data_dir)
        self.heap_mb = heap_mb

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def cluster_id(self) -> str:
        """The folder's cluster id (created and kept on first use)."""
        path = self.data_dir / "cluster.id"
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        cid = new_cluster_id()
        path.write_text(cid + "\n")
        return cid

    def prepare(self) -> None:
        """Write server.properties (the controller port kept while it is free) and format the log
        dir once; a formatted folder is never formatted again."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cport = _previous_controller_port(self.config_file)
        if cport is None or cport == self.port or answers("127.0.0.1", cport):
            cport = free_port()
        self.config_file.write_text(server_properties(self.host, self.port, cport, self.log_dir.resolve()))
        if (self.log_dir / "meta.properties").is_file():
            return
        argv = java_command(STORAGE_TOOL, "format", "-t", self.cluster_id(), "-c", str(self.config_file), heap_mb=256)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.log_dir} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        log.info("formatted %s (cluster id %s)", self.log_dir, self.cluster_id())

    def start(self, timeout_s: float | None = None) -> KafkaBroker:
        """Start the broker and wait until it answers a metadata request that lists itself."""
        self.prepare()
        argv = java_command(MAIN, str(self.config_file), heap_mb=self.heap_mb)
        self._launch(argv, self._ready, timeout_s, cwd=self.data_dir)
        return self

    def _ready(self) -> bool:
        """Whether the broker answers a metadata request and lists itself as a live broker."""
        if not answers(self.host, self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=5000)
        except (KafkaError, OSError):
            return False
        try:
            brokers = admin.describe_cluster().get("brokers") or []
            return any(not b.get("is_fenced") for b in brokers)
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()
