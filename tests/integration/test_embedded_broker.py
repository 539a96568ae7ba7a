"""Apache Kafka as the durable embedded broker: a restart on the same data keeps topics, records and
committed offsets; under supervision a broker killed with -9 comes back on its data, and one that is
only stopped (SIGSTOP) is waited for, not replaced."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from services._supervision import PlatformSupervisor
from services.metrics import PlatformMetrics
from streaming._broker_proc import process_state
from streaming.broker import KafkaBroker, free_port
from streaming.events import TextEvent
from streaming.kafka import Consumer, Producer, ensure_topics
from streaming.settings import StreamSettings

pytestmark = pytest.mark.integration


def settings_for(broker: KafkaBroker, tmp_path) -> StreamSettings:
    run = uuid.uuid4().hex[:10]
    return StreamSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{run}",
        consumer_group=f"g{run}",
        state_dir=tmp_path / "state",
    )


def publish(s: StreamSettings, ids: list[str]) -> None:
    producer = Producer(s)
    for i in ids:
        producer.publish(s.topics.texts, TextEvent(id=i, text=f"text {i}"))
    producer.flush()
    producer.close()


def read(consumer: Consumer, n: int, timeout_s: float = 60.0) -> list[str]:
    keys: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(keys) < n and time.monotonic() < deadline:
        keys += [r.key.decode() for r in consumer.poll(0.5)]
    return keys


@pytest.fixture
def kafka(tmp_path):
    broker = KafkaBroker(f"127.0.0.1:{free_port()}", tmp_path / "kafka", log_file=tmp_path / "broker.log")
    yield broker.start()
    broker.stop()


def test_a_restart_on_the_same_data_keeps_topics_records_and_committed_offsets(kafka, tmp_path):
    s = settings_for(kafka, tmp_path)
    ensure_topics(s, s.topics.all(), partitions=2)
    publish(s, [f"a{i}" for i in range(20)])
    consumer = Consumer(s, group_id=s.consumer_group)
    consumer.assign([s.topics.texts])
    first = read(consumer, 20)
    consumer.commit(consumer.positions())
    consumer.close()
    assert sorted(first) == sorted(f"a{i}" for i in range(20))
    publish(s, [f"b{i}" for i in range(5)])
    cluster_id = kafka.cluster_id()

    kafka.restart()

    assert kafka.cluster_id() == cluster_id
    again = Consumer(s, group_id=s.consumer_group)
    assert set(s.topics.all()) <= set(again._consumer.topics())
    assert len(again.partitions(s.topics.texts)) == 2
    offsets = again.assign([s.topics.texts])
    assert sum(offsets.values()) == 20  # the committed offsets survived
    assert sorted(read(again, 5)) == [f"b{i}" for i in range(5)]  # so did the records after them
    again.close()
    everything = Consumer(s, group_id=None)
    everything.assign([s.topics.texts])
    assert len(read(everything, 25)) == 25
    everything.close()


def test_a_killed_broker_is_restarted_on_its_data_and_a_stopped_one_waited_for(kafka, tmp_path):
    s = settings_for(kafka, tmp_path)
    ensure_topics(s, s.topics.all())
    publish(s, ["before"])
    metrics = PlatformMetrics(CollectorRegistry())
    supervisor = PlatformSupervisor(kafka, {}, lambda: ensure_topics(s, s.topics.all()), metrics, actors_every_s=1e9)
    assert kafka.pid is not None

    pid = kafka.pid
    os.kill(pid, signal.SIGSTOP)  # paused, not dead: never replaced
    try:
        deadline = time.monotonic() + 10
        while process_state(pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_state(pid) == "T"
        for _ in range(3):
            supervisor.check()
        assert kafka.pid == pid and metrics.broker_restarts._value.get() == 0
    finally:
        os.kill(pid, signal.SIGCONT)

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while kafka.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    supervisor.check()  # restarts it and waits until it answers
    assert kafka.alive() and kafka.pid != pid
    assert metrics.broker_restarts._value.get() == 1

    publish(s, ["after"])
    consumer = Consumer(s, group_id=None)
    consumer.assign([s.topics.texts])
    assert read(consumer, 2) == ["before", "after"]
    consumer.close()
