"""kafka-python wrappers against both real embedded brokers, Apache Kafka and tansu."""

import pytest

from streaming.events import TextEvent
from streaming.kafka import Consumer, Producer, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture(params=["kafka", "tansu"])
def broker(request, embedded_broker):
    """Each test here runs on both kinds of embedded broker (``make_settings`` uses this one)."""
    return embedded_broker(request.param)


def test_produce_consume_commit_and_resume(make_settings):
    s = make_settings(topic_partitions=2)
    producer = Producer(s)
    for i in range(50):
        producer.publish(s.topics.texts, TextEvent(id=f"id{i}", text=f"text {i}"))
    producer.flush()
    producer.close()

    consumer = Consumer(s, group_id=s.consumer_group)
    assert consumer.assign([s.topics.texts]) == {f"{s.topics.texts}:0": 0, f"{s.topics.texts}:1": 0}
    seen = []
    while len(seen) < 50:
        seen += consumer.poll(1.0)
    assert sorted(r.key.decode() for r in seen) == sorted(f"id{i}" for i in range(50))
    # same key, same partition
    by_key = {r.key: r.partition for r in seen}
    assert all(by_key[r.key] == r.partition for r in seen)
    consumer.commit(consumer.positions())
    consumer.close()

    again = Consumer(s, group_id=s.consumer_group)
    offsets = again.assign([s.topics.texts])
    assert sum(offsets.values()) == 50  # resumes from the committed offsets
    assert again.poll(0.5) == []
    again.close()


def test_offsets_past_the_end_restart_from_the_start(make_settings):
    s = make_settings()
    producer = Producer(s)
    for i in range(5):
        producer.publish(s.topics.labeled, TextEvent(id=f"x{i}", text="t"))
    producer.flush()
    producer.close()
    consumer = Consumer(s, group_id=None)
    chosen = consumer.assign([s.topics.labeled], {f"{s.topics.labeled}:0": 10_000})
    assert chosen == {f"{s.topics.labeled}:0": 0}
    records = []
    while len(records) < 5:
        records += consumer.poll(1.0)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    # an offset inside the data is kept
    assert consumer.assign([s.topics.labeled], {f"{s.topics.labeled}:0": 3}) == {f"{s.topics.labeled}:0": 3}
    consumer.close()


def test_ensure_topics_is_idempotent(make_settings):
    s = make_settings()
    ensure_topics(s, s.topics.all())
    ensure_topics(s, [*s.topics.all(), s.topics.texts + ".extra"], partitions=3)
    c = Consumer(s, group_id=None)
    assert len(c.partitions(s.topics.texts + ".extra")) == 3
    c.close()


def test_process_producer_delivers_in_order_and_flushes(make_settings):
    from streaming.kafka import ProcessProducer

    s = make_settings()
    p = ProcessProducer(s, client_id="test", batch=7)
    for i in range(100):
        p.publish(s.topics.texts, TextEvent(id=f"k{i}", text=f"t{i}"))
    p.flush()  # returns only once the child flushed all 100
    c = Consumer(s, group_id=None)
    c.assign([s.topics.texts])
    records = c.poll(2.0)
    c.close()
    assert [r.key.decode() for r in records] == [f"k{i}" for i in range(100)]
    p.close()
    assert not p._proc.is_alive()
