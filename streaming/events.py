"""Typed, frozen event models (schema version 1) and their strict decoding from Kafka bytes.

Unknown extra fields are kept (``extra="allow"``) so that newer producers do not lose data
through older consumers. Decoding never raises anything but :class:`InvalidEvent`, whose
``reason`` is one of :data:`DLQ_REASONS`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from streaming.errors import InvalidEvent

SCHEMA_VERSION = 1
DLQ_PAYLOAD_BYTES = 4096

#: Every reason a message can be dead-lettered for (the ``reason`` label of
#: ``streamcl_dlq_events_total``; all start at zero).
DLQ_REASONS: tuple[str, ...] = (
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "unsupported_version",
    "missing_field",
    "wrong_type",
    "empty_text",
    "text_too_long",
    "invalid_label",
    "unjoined_feedback",
    "invalid_event",
)

Timestamp = StrictFloat | StrictInt


def now() -> float:
    """Current Unix time in seconds (the ``ts`` of events made here)."""
    return time.time()


class Event(BaseModel):
    """Base of every event: schema version ``v`` and extra fields kept as they came."""

    model_config = ConfigDict(frozen=True, extra="allow")
    v: Literal[1] = 1

    def to_bytes(self) -> bytes:
        """JSON bytes as published on Kafka."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


class TextEvent(Event):
    """A live text to classify (topic ``streamcl.texts``)."""

    id: StrictStr = Field(min_length=1, max_length=256)
    text: StrictStr
    ts: Timestamp = Field(default_factory=now)
    domain: StrictStr | None = None
    meta: dict[str, Any] | None = None


class FeedbackEvent(Event):
    """The true label of a text, arriving later (topic ``streamcl.feedback``)."""

    id: StrictStr = Field(min_length=1, max_length=256)
    label: StrictStr
    ts: Timestamp = Field(default_factory=now)


class LabeledExample(Event):
    """A text joined with its feedback (topic ``streamcl.labeled``)."""

    id: StrictStr = Field(min_length=1, max_length=256)
    text: StrictStr
    label: StrictStr
    ts: Timestamp = Field(default_factory=now)
    domain: StrictStr | None = None


class PredictionEvent(Event):
    """What the serving model answered for a text (topic ``streamcl.predictions``)."""

    id: StrictStr = Field(min_length=1, max_length=256)
    label: StrictStr | None = None  # None while the model knows no label (left out of the JSON)
    scores: dict[str, float]
    model_version: StrictInt
    ts: Timestamp = Field(default_factory=now)


ModelStatus = Literal["candidate", "promoted", "rejected", "rolled_back"]


class ModelEvent(Event):
    """A model version changed status (topic ``streamcl.models``)."""

    model: StrictStr
    version: StrictInt
    status: ModelStatus
    parent: StrictInt | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    uri: StrictStr
    ts: Timestamp = Field(default_factory=now)


DriftKind = Literal["input", "prediction", "concept"]


class DriftEvent(Event):
    """A drift detector fired (topic ``streamcl.drift``); the learner can act on it."""

    detector: StrictStr
    kind: DriftKind
    score: float
    threshold: float | None = None
    at: StrictInt = Field(ge=0, description="observations the detector had seen when it fired")
    source: StrictStr = Field(description="the component that detected it (monitor, learner)")
    model: StrictStr = "default"
    detail: dict[str, Any] = Field(default_factory=dict)
    ts: Timestamp = Field(default_factory=now)


class DeadLetter(Event):
    """A message that could not be used, with why (topic ``streamcl.dlq``)."""

    source_topic: StrictStr
    partition: StrictInt
    offset: StrictInt
    error: StrictStr
    reason: StrictStr
    payload: StrictStr
    payload_encoding: Literal["utf-8", "base64"]
    ts: Timestamp = Field(default_factory=now)

    @classmethod
    def for_message(
        cls, topic: str, partition: int, offset: int, raw: bytes | None, reason: str, error: str
    ) -> DeadLetter:
        """Wrap the first 4 KiB of ``raw``: as text when valid UTF-8, else base64."""
        head = (raw or b"")[:DLQ_PAYLOAD_BYTES]
        try:
            payload, encoding = head.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            # A cut inside the last multi-byte character still leaves text.
            if exc.start >= len(head) - 3 and len(raw or b"") > DLQ_PAYLOAD_BYTES:
                try:
                    payload, encoding = head[: exc.start].decode("utf-8"), "utf-8"
                except UnicodeDecodeError:
                    payload, encoding = base64.b64encode(head).decode("ascii"), "base64"
            else:
                payload, encoding = base64.b64encode(head).decode("ascii"), "base64"
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            error=error,
            reason=reason,
            payload=payload,
            payload_encoding=encoding,  # type: ignore[arg-type]
        )


E = TypeVar("E", bound=Event)

_TYPE_ERRORS = ("_type", "_parsing", "literal_error", "dict_type", "model_type")


def _reason_for(error: ValidationError) -> tuple[str, str]:
    return reason_for(error.errors(include_url=False)[0])


def reason_for(first: Mapping[str, Any]) -> tuple[str, str]:
    """The DLQ reason and detail of one pydantic validation problem of an event (the HTTP API
    answers a bad feedback item with the same vocabulary)."""
    where = ".".join(str(p) for p in first["loc"]) or "event"
    kind = first["type"]
    if kind == "missing":
        return "missing_field", f"missing field '{where}'"
    if where == "v":
        return "unsupported_version", f"schema version must be {SCHEMA_VERSION}"
    if where == "label":
        return "invalid_label", f"label must be a non-empty string: {first['msg']}"
    if any(kind.endswith(t) or kind == t for t in _TYPE_ERRORS):
        return "wrong_type", f"field '{where}': {first['msg']}"
    return "invalid_event", f"field '{where}': {first['msg']}"


def decode(cls: type[E], raw: bytes | None, max_text_chars: int) -> E:
    """Decode Kafka bytes into ``cls``; raise :class:`InvalidEvent` with a DLQ reason."""
    if raw is None:
        raise InvalidEvent("invalid_json", "empty message (tombstone)")
    try:  # fast path: parse and validate in pydantic-core; errors take the precise path below
        return _check_limits(cls, cls.model_validate_json(raw), max_text_chars)
    except ValidationError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("invalid_utf8", f"not valid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent("invalid_json", f"not JSON: {exc}") from None
    return validate(cls, obj, max_text_chars)


def validate(cls: type[E], obj: object, max_text_chars: int) -> E:
    """Validate a parsed JSON value into ``cls`` with streamcl's limits."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    obj.setdefault("v", SCHEMA_VERSION)
    try:
        event = cls.model_validate(obj)
    except ValidationError as exc:
        reason, detail = _reason_for(exc)
        raise InvalidEvent(reason, detail) from None
    return _check_limits(cls, event, max_text_chars)


def _check_limits(cls: type[E], event: E, max_text_chars: int) -> E:
    fields = cls.model_fields
    text = event.text if "text" in fields else None  # type: ignore[attr-defined]
    if text is not None:
        if not text.strip():
            raise InvalidEvent("empty_text", "text is empty")
        if len(text) > max_text_chars:
            raise InvalidEvent("text_too_long", f"text has {len(text)} characters, limit {max_text_chars}")
    label = event.label if "label" in fields else None  # type: ignore[attr-defined]
    if isinstance(label, str) and not label.strip():
        raise InvalidEvent("invalid_label", "label is empty")
    return event


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka message: where it came from beside what it holds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = -1

    def dead_letter(self, reason: str, error: str) -> DeadLetter:
        """The DeadLetter for this record."""
        return DeadLetter.for_message(self.topic, self.partition, self.offset, self.value, reason, error)
