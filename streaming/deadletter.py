"""Decode → dead-letter → count, written once for every consumer.

A record that does not decode into its event type never stops a consumer: it goes to the DLQ
topic as a :class:`~streaming.events.DeadLetter` with the reason, and is counted in
``streamcl_dlq_events_total{reason}``, ``streamcl_events_produced_total{topic=<dlq>}`` and
``streamcl_events_consumed_total{topic, outcome="dlq"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from streaming.errors import InvalidEvent
from streaming.events import DeadLetter, Event, Record, decode
from streaming.metrics import MetricGroup

E = TypeVar("E", bound=Event)

#: Consumed records by (topic, outcome), for a caller that counts once per poll.
Outcomes = dict[tuple[str, str], int]


class Publisher(Protocol):
    """What dead-lettering needs of a producer (``Producer`` and ``ProcessProducer`` fit)."""

    def publish(self, topic: str, event: Event, key: str | None = None) -> Any: ...


def dead_letter(dead: DeadLetter, producer: Publisher, dlq_topic: str, metrics: MetricGroup) -> None:
    """Publish ``dead`` to ``dlq_topic``, keyed by where it came from, and count it by reason."""
    producer.publish(dlq_topic, dead, key=f"{dead.source_topic}:{dead.partition}:{dead.offset}")
    metrics.dlq.labels(dead.reason).inc()
    metrics.produced.labels(dlq_topic).inc()


def decode_or_dead_letter(
    cls: type[E],
    rec: Record,
    max_text_chars: int,
    producer: Publisher,
    dlq_topic: str,
    metrics: MetricGroup,
    outcomes: Outcomes | None = None,
) -> E | None:
    """``rec`` decoded as ``cls``, or None after dead-lettering it with its reason.

    The record is counted as consumed (outcome ``ok`` or ``dlq``) at once, or, when
    ``outcomes`` is given, tallied there for :func:`count_consumed` once per poll (the joiner's
    hot path).
    """
    try:
        event: E | None = decode(cls, rec.value, max_text_chars)
    except InvalidEvent as exc:
        dead_letter(rec.dead_letter(exc.reason, exc.detail), producer, dlq_topic, metrics)
        event = None
    key = (rec.topic, "ok" if event is not None else "dlq")
    if outcomes is None:
        metrics.consumed.labels(*key).inc()
    else:
        outcomes[key] = outcomes.get(key, 0) + 1
    return event


def count_consumed(metrics: MetricGroup, outcomes: Mapping[tuple[str, str], int]) -> None:
    """Add a poll's tally of consumed records (see :func:`decode_or_dead_letter`)."""
    for (topic, outcome), n in outcomes.items():
        metrics.consumed.labels(topic, outcome).inc(n)
