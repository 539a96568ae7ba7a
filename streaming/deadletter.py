"""Decode → dead-letter → count, written once for every consumer.

A record that does not decode into its event type never stops a consumer: it goes to the DLQ
topic as a :class:`~streaming.events.DeadLetter` with the reason, and is counted in
``streamcl_dlq_events_total{reason}``, ``streamcl_events_produced_total{topic=<dlq>}`` and
``streamcl_events_consumed_total{topic, outcome="dlq"}``. A :class:`DeadLetterPolicy` says what
a dead letter keeps of its message: at most ``STREAMCL_DLQ_PAYLOAD_BYTES``, masked with
``STREAMCL_PII=mask``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from streaming.errors import InvalidEvent
from streaming.events import DLQ_PAYLOAD_BYTES, DeadLetter, Event, Record, decode
from streaming.metrics import MetricGroup
from streaming.pii import Masker

E = TypeVar("E", bound=Event)

#: Consumed records by (topic, outcome), for a caller that counts once per poll.
Outcomes = dict[tuple[str, str], int]


class Publisher(Protocol):
    """What dead-lettering needs of a producer (``Producer`` and ``ProcessProducer`` fit)."""

    def publish(self, topic: str, event: Event, key: str | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class DeadLetterPolicy:
    """What a dead letter keeps of its message: its first ``payload_bytes`` (0: nothing), with
    personal data masked by ``masker`` first (then a payload that is not UTF-8 is kept as text,
    its invalid bytes replaced, since only text can be masked)."""

    payload_bytes: int = DLQ_PAYLOAD_BYTES
    masker: Masker | None = None

    def apply(self, dead: DeadLetter) -> DeadLetter:
        """``dead`` as this policy keeps it."""
        if self.masker is None and self.payload_bytes >= DLQ_PAYLOAD_BYTES:
            return dead
        raw = base64.b64decode(dead.payload) if dead.payload_encoding == "base64" else dead.payload.encode()
        error, encoding = dead.error, dead.payload_encoding
        if self.masker is not None:
            if len(raw) >= DLQ_PAYLOAD_BYTES - 3:  # cut by DeadLetter.for_message: drop the cut word, a
                raw = raw[: max(raw.rfind(b" "), 0)]  # half e-mail address is no longer recognised
            raw = self.masker.mask(unescaped(raw.decode("utf-8", "replace"))).encode("utf-8", "replace")
            error, encoding = self.masker.mask(error), "utf-8"
        raw = raw[: self.payload_bytes]
        payload = raw.decode("utf-8", "ignore") if encoding == "utf-8" else base64.b64encode(raw).decode("ascii")
        return dead.model_copy(update={"payload": payload, "payload_encoding": encoding, "error": error})


#: A JSON string escape: ``\\uXXXX`` (a surrogate pair as one) or a backslash and one character.
_ESCAPE = re.compile(r"\\(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _unescape_one(match: re.Match[str]) -> str:
    """``\\/`` as ``/`` and ``\\uXXXX`` as its character, unless that character would change the
    JSON's structure (a quote, a backslash, a control character) or is a lone surrogate."""
    body = match.group(1)
    if body == "/":
        return "/"
    if body[0] != "u":
        return match.group(0)  # \\, \", \n...: kept as they are
    char = json.loads(f'"{match.group(0)}"')
    if any(c in '"\\' or ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF for c in char):
        return match.group(0)
    return str(char)


def unescaped(text: str) -> str:
    """``text`` with its JSON string escapes undone where they would hide personal data from
    masking (``https:\\/\\/bob:pw@host``, ``jos\\u00e9@example.com``): a whole JSON document is
    decoded and written back without escapes; a cut one has ``\\/`` and ``\\uXXXX`` undone."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except (ValueError, RecursionError):
        return _ESCAPE.sub(_unescape_one, text) if "\\" in text else text


def dead_letter(
    dead: DeadLetter, producer: Publisher, dlq_topic: str, metrics: MetricGroup, policy: DeadLetterPolicy | None = None
) -> None:
    """Publish ``dead`` to ``dlq_topic`` (as ``policy`` keeps it), keyed by where it came from,
    and count it by reason."""
    if policy is not None:
        dead = policy.apply(dead)
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
    policy: DeadLetterPolicy | None = None,
) -> E | None:
    """``rec`` decoded as ``cls``, or None after dead-lettering it with its reason.

    The record is counted as consumed (outcome ``ok`` or ``dlq``) at once, or, when
    ``outcomes`` is given, tallied there for :func:`count_consumed` once per poll (the joiner's
    hot path).
    """
    try:
        event: E | None = decode(cls, rec.value, max_text_chars)
    except InvalidEvent as exc:
        dead_letter(rec.dead_letter(exc.reason, exc.detail), producer, dlq_topic, metrics, policy)
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
