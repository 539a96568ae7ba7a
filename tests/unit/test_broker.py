"""The embedded brokers without starting one: Kafka's configuration and cluster id, clear errors
when Java or the jars are missing, and the supervision rules (restart the dead, wait for the
stopped, give up on one that keeps dying)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services._supervision import PlatformSupervisor
from services.metrics import PlatformMetrics
from streaming import _broker_kafka
from streaming._broker_kafka import KafkaBroker, _previous_controller_port, new_cluster_id, server_properties
from streaming._broker_proc import process_state, split_address
from streaming.broker import BrokerSupervisor, start_embedded
from streaming.errors import BrokerError
from streaming.settings import StreamSettings


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_server_properties_are_a_single_kraft_node(tmp_path):
    p = props(server_properties("127.0.0.1", 19092, 19093, tmp_path / "logs"))
    assert p["process.roles"] == "broker,controller"
    assert p["node.id"] == "1"
    assert p["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert p["log.dirs"] == str(tmp_path / "logs")
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor", "min.insync.replicas"):
        assert p[key] == "1"
    assert p["group.initial.rebalance.delay.ms"] == "0"
    # the producers send batches up to 8 MiB (streaming/_producer.py): the broker takes them
    assert int(p["message.max.bytes"]) >= 8 * 1024 * 1024


def test_cluster_ids_look_like_kafkas_and_are_kept_in_the_data_dir(tmp_path):
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    broker = KafkaBroker("127.0.0.1:19092", tmp_path / "kafka")
    broker.data_dir.mkdir()
    first = broker.cluster_id()
    assert KafkaBroker("127.0.0.1:19092", tmp_path / "kafka").cluster_id() == first
    assert (tmp_path / "kafka" / "cluster.id").read_text().strip() == first


def test_the_controller_port_of_an_earlier_start_is_read_back(tmp_path):
    config = tmp_path / "server.properties"
    assert _previous_controller_port(config) is None
    config.write_text(server_properties("127.0.0.1", 19092, 23456, tmp_path))
    assert _previous_controller_port(config) == 23456


def test_missing_jars_or_java_say_run_make_install(tmp_path, monkeypatch):
    monkeypatch.setattr(_broker_kafka, "kafka_home", lambda: tmp_path / "nowhere")
    with pytest.raises(BrokerError, match="make install"):
        KafkaBroker("127.0.0.1:1", tmp_path / "kafka").prepare()
    monkeypatch.setattr(_broker_kafka.shutil, "which", lambda name: None)
    with pytest.raises(BrokerError, match=r"Java.*make install"):
        KafkaBroker("127.0.0.1:1", tmp_path / "kafka").prepare()
    assert not _broker_kafka.kafka_installed()


def test_start_embedded_refuses_unknown_kinds_and_kafka_without_a_data_dir():
    with pytest.raises(BrokerError, match="unknown embedded broker kind"):
        start_embedded("redpanda", "127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="data dir"):
        start_embedded("kafka", "127.0.0.1:1", None)


def test_the_broker_kind_setting(monkeypatch):
    assert StreamSettings().embedded_broker_kind == "kafka"
    monkeypatch.setenv("STREAMCL_EMBEDDED_BROKER_KIND", "tansu")
    assert StreamSettings().embedded_broker_kind == "tansu"
    monkeypatch.setenv("STREAMCL_EMBEDDED_BROKER_KIND", "memory")
    with pytest.raises(ValueError):
        StreamSettings()


def test_addresses_and_process_states():
    assert split_address("10.0.0.1:9092") == ("10.0.0.1", 9092)
    assert split_address(":9092") == ("127.0.0.1", 9092)
    assert process_state(os.getpid()) in ("R", "S")
    assert process_state(2**22 + 12345) is None


class FakeBroker:
    """A broker whose process dies, stops or refuses to come back on demand."""

    kind = "kafka"
    bootstrap = "127.0.0.1:19092"
    pid = 4242

    def __init__(self) -> None:
        self.running = True
        self.fail_starts = 0
        self.restarts = 0

    def alive(self) -> bool:
        return self.running

    def stop(self, timeout_s: float = 0.0) -> None:
        self.running = False

    def restart(self, timeout_s: float = 0.0) -> FakeBroker:
        self.restarts += 1
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise BrokerError("port in use")
        self.running = True
        return self


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_live_or_stopped_broker_is_left_alone_a_dead_one_restarted():
    broker, clock, seen = FakeBroker(), Clock(), []
    sup = BrokerSupervisor(broker, seen.append, clock=clock)  # type: ignore[arg-type]
    assert not sup.check() and broker.restarts == 0  # running, or SIGSTOPped: the process exists
    broker.running = False  # exited, or killed with -9
    assert sup.check()
    assert broker.running and broker.restarts == 1 and sup.restarts == 1 and seen == [broker]


def test_failed_restarts_back_off_then_succeed():
    broker, clock = FakeBroker(), Clock()
    sup = BrokerSupervisor(broker, clock=clock, first_delay_s=1.0, most_delay_s=30.0, max_restarts=10)  # type: ignore[arg-type]
    broker.running, broker.fail_starts = False, 2
    assert not sup.check() and broker.restarts == 1
    assert "port in use" in (sup.last_error or "")
    assert not sup.check() and broker.restarts == 1  # waiting out the backoff
    clock.now += 1.0
    assert not sup.check() and broker.restarts == 2
    clock.now += 1.5
    assert not sup.check() and broker.restarts == 2  # the second wait is 2 s
    clock.now += 0.5
    assert sup.check() and broker.running and broker.restarts == 3


def test_a_broker_that_keeps_dying_is_given_up_on_with_the_reason():
    broker, clock = FakeBroker(), Clock()
    sup = BrokerSupervisor(broker, clock=clock, max_restarts=3, window_s=60.0)  # type: ignore[arg-type]
    for _ in range(3):
        broker.running = False
        assert sup.check()
        clock.now += 10.0
    broker.running = False
    with pytest.raises(BrokerError, match="died 4 times within 60s"):
        sup.check()
    clock.now += 60.0  # the first deaths left the window: it may try again
    assert sup.check()


def test_the_platform_supervisor_counts_restarts_recreates_topics_and_warns_of_lost_data(caplog):
    broker, metrics, created = FakeBroker(), PlatformMetrics(CollectorRegistry()), []
    sup = PlatformSupervisor(broker, {}, lambda: created.append(1), metrics, actors_every_s=1e9)  # type: ignore[arg-type]
    broker.running = False
    sup.check()
    assert metrics.broker_restarts._value.get() == 1 and created == [1]
    assert "DATA LOST" not in caplog.text  # Kafka keeps its data
    broker.kind, broker.running = "tansu", False
    with caplog.at_level(logging.ERROR):
        sup.check()
    assert metrics.broker_restarts._value.get() == 2 and created == [1, 1]
    assert "DATA LOST" in caplog.text


def test_kafka_broker_paths(tmp_path):
    b = KafkaBroker("localhost:19092", Path(tmp_path))
    assert b.bootstrap == "localhost:19092" and b.pid is None and not b.alive()
    assert b.config_file == tmp_path / "server.properties" and b.log_dir == tmp_path / "logs"
    b.stop()  # nothing started: nothing to do


def test_streamcl_up_supervises_every_second_and_stops_on_a_part_that_cannot_come_back():
    import threading

    from services.cli import _watch
    from streaming.errors import StreamclError

    class Platform:
        def __init__(self) -> None:
            self.urls: dict[str, str] = {}
            self.rounds = 0

        def supervise(self) -> None:
            self.rounds += 1
            if self.rounds == 3:
                raise StreamclError("the embedded kafka broker died 6 times within 600s; giving up")

    platform = Platform()
    with pytest.raises(StreamclError, match="giving up"):
        _watch(platform, None, threading.Event(), duration=60.0, progress_s=3600.0)
    assert platform.rounds == 3
