"""Thin wrappers over kafka-python: topic creation, the producers (acks=all, retried, not idempotent:
every failed send counted and raised on flush; from :mod:`streaming._producer`), a consumer with manual commits
and explicit offsets, and clean close.

Offsets here are always *next* offsets (the position to read from), keyed ``"topic:partition"``
in JSON so a checkpoint can hold them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streaming._producer import ProcessProducer, Producer, SendFailed
from streaming.errors import BrokerError
from streaming.events import Record
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)

Offsets = dict[str, int]

__all__ = [
    "Consumer",
    "Offsets",
    "ProcessProducer",
    "Producer",
    "SendFailed",
    "ensure_topics",
    "offset_key",
    "parse_offset_key",
]


def offset_key(topic: str, partition: int) -> str:
    """JSON-friendly key of a topic partition."""
    return f"{topic}:{partition}"


def parse_offset_key(key: str) -> TopicPartition:
    topic, _, partition = key.rpartition(":")
    return TopicPartition(topic, int(partition))


def ensure_topics(
    settings: StreamSettings, names: Iterable[str], partitions: int | None = None, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet, with STREAMCL_TOPIC_RETENTION_MS as their
    ``retention.ms`` (existing ones are left as they are)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**settings.kafka_config(), client_id="streamcl-admin")
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerError(f"no Kafka broker at {settings.bootstrap}", settings.bootstrap) from exc
            time.sleep(0.5)
    retention = settings.topic_retention_ms
    configs = {"retention.ms": str(retention)} if retention else {}
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions or settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=configs,
            )
            for name in names
            if name not in existing
        ]
        for topic in wanted:  # one by one: an existing topic must not hide the others
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


class Consumer:
    """Consumer with manual commits. Use :meth:`assign` (explicit offsets, as a checkpoint
    holds them) or :meth:`subscribe` (consumer-group balancing)."""

    def __init__(self, settings: StreamSettings, group_id: str | None, client_id: str = "streamcl", **overrides: Any):
        config: dict[str, Any] = {
            **settings.kafka_config(),
            "client_id": client_id,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": 1000,
            # how long the broker holds a fetch while there is nothing to read (it answers as
            # soon as data arrives): idle consumers wake 2 times a second, not 10
            "fetch_max_wait_ms": 500,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 1_000,
        }
        config.update(overrides)
        try:
            self._consumer = KafkaConsumer(**config)
        except KafkaError as exc:
            raise BrokerError(f"no Kafka broker at {settings.bootstrap}", settings.bootstrap) from exc
        self._group = group_id
        self._config = {k: v for k, v in config.items() if k != "group_id"}

    def partitions(self, topic: str, timeout_s: float = 15.0) -> list[TopicPartition]:
        """All partitions of ``topic`` (waits for metadata)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return [TopicPartition(topic, p) for p in sorted(found)]
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {topic!r} not found")
            self._consumer.topics()  # refresh metadata
            time.sleep(0.2)

    def assign(
        self,
        topics: Iterable[str],
        offsets: Mapping[str, int] | None = None,
        from_end: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> Offsets:
        """Read every partition of ``topics`` from ``offsets`` (else the committed offset, else
        the start, or the end with ``from_end``: only what arrives from now on). An offset
        outside the partition's current range (a new, empty broker, or data removed by
        retention) is logged and replaced by the partition's start.

        ``shard=(i, n)`` keeps the partitions whose number is ``i`` modulo ``n``: the same
        partition numbers of every topic, so co-partitioned topics (keyed alike, as many
        partitions) meet in the same consumer."""
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index} of {count}: need 0 <= index < count")
        parts = [tp for topic in topics for tp in self.partitions(topic) if tp.partition % count == index]
        self._consumer.assign(parts)
        start = self._consumer.beginning_offsets(parts)
        end = self._consumer.end_offsets(parts)
        chosen: Offsets = {}
        for tp in parts:
            key = offset_key(tp.topic, tp.partition)
            wanted = (offsets or {}).get(key)
            if wanted is None and self._group:
                wanted = self._consumer.committed(tp)
            if wanted is None:
                wanted = self._probe_end(tp, start[tp], end[tp]) if from_end else start[tp]
            elif wanted > end[tp] and wanted <= self._probe_end(tp, start[tp], end[tp]):
                pass  # the broker under-reported its end offset (tansu: last batch's base + 1)
            elif wanted > end[tp] or wanted < start[tp]:
                log.warning(
                    "offset %d of %s is outside the partition's range [%d, %d] (new broker or "
                    "expired data): reading from the start, %d",
                    wanted,
                    key,
                    start[tp],
                    end[tp],
                    start[tp],
                )
                wanted = start[tp]
            self._consumer.seek(tp, wanted)
            chosen[key] = wanted
        return chosen

    def _probe_end(self, tp: TopicPartition, start: int, reported: int, timeout_s: float = 3.0) -> int:
        """The true end offset of ``tp``, read from the data after ``reported - 1``."""
        if reported <= start:
            return reported
        probe = KafkaConsumer(**self._config, group_id=None)
        try:
            probe.assign([tp])
            probe.seek(tp, reported - 1)
            end, deadline = reported, time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                batch = probe.poll(timeout_ms=200).get(tp, [])
                if not batch:
                    if end > reported - 1:
                        break
                    continue
                end = max(end, batch[-1].offset + 1)
            return end
        finally:
            probe.close(autocommit=False)

    def subscribe(self, topics: Iterable[str]) -> None:
        self._consumer.subscribe(list(topics))

    def poll(self, timeout_s: float = 0.5, max_records: int | None = None) -> list[Record]:
        """Next messages, in partition order, as :class:`Record`."""
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
            for messages in batches.values()
            for m in messages
        ]

    def end_offsets(self) -> Offsets:
        parts = list(self._consumer.assignment())
        return {offset_key(tp.topic, tp.partition): o for tp, o in self._consumer.end_offsets(parts).items()}

    def positions(self) -> Offsets:
        return {offset_key(tp.topic, tp.partition): self._consumer.position(tp) for tp in self._consumer.assignment()}

    def lag(self) -> int:
        """Messages between the current positions and the ends of the assigned partitions."""
        ends = self.end_offsets()
        return sum(max(0, ends[k] - pos) for k, pos in self.positions().items() if k in ends)

    def seek(self, offsets: Mapping[str, int]) -> None:
        """Move the assigned partitions of ``offsets`` back (or on) to them."""
        assigned = self._consumer.assignment()
        for key, offset in offsets.items():
            tp = parse_offset_key(key)
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def committed(self, keys: Iterable[str]) -> Offsets:
        """The group's committed offsets of ``keys`` (``topic:partition``) that have one."""
        if not self._group:
            return {}
        out: Offsets = {}
        for key in keys:
            value = self._consumer.committed(parse_offset_key(key))
            if value is not None:
                out[key] = value
        return out

    def commit(self, offsets: Mapping[str, int]) -> None:
        """Commit next offsets to the group (only after they are durable elsewhere)."""
        if not self._group or not offsets:
            return
        from kafka.structs import OffsetAndMetadata

        try:
            self._consumer.commit({parse_offset_key(k): OffsetAndMetadata(v, "", -1) for k, v in offsets.items()})
        except KafkaError as exc:  # the checkpoint holds the truth; the group is for lag
            log.warning("offset commit failed (will retry with the next checkpoint): %s", exc)

    def close(self) -> None:
        self._consumer.close(autocommit=False)
