"""Typed, frozen event models (schema version 1) and their strict decoding from Kafka bytes.

Unknown extra fields are kept (``extra="allow"``) so that newer producers do not lose data
through older consumers. Decoding never raises anything but :class:`InvalidEvent`, whose
``reason`` is one of :data:`DLQ_REASONS`, whatever the bytes: events are flat, so nesting
deeper than :data:`MAX_DEPTH` is refused (pydantic-core's parser stops at 200 levels, so the
cost stays linear), and every field is bounded
(``max_text_chars`` for a text, :data:`MAX_NAME_CHARS` for an id, :data:`MAX_LABEL_CHARS` for a
label, :data:`MAX_DOMAIN_CHARS` for a domain, :data:`MAX_FIELD_CHARS` for anything else): one
client cannot make every later response or metric scrape long.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NoReturn, TypeVar

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from streaming.errors import InvalidEvent

SCHEMA_VERSION = 1
DLQ_PAYLOAD_BYTES = 4096
#: Longest ``error`` of a DeadLetter (a problem's detail may quote a field name of any length).
DLQ_ERROR_CHARS = 1024
#: Deepest JSON nesting a message may have (events are flat; ``meta`` and ``metrics`` hold a
#: few levels at most).
MAX_DEPTH = 32
#: Longest id (as the HTTP API), in characters.
MAX_NAME_CHARS = 256
#: Longest label (a row of the head, a score in every response), in characters.
MAX_LABEL_CHARS = 128
#: Longest domain (a Prometheus label value, a held-out slice), in characters.
MAX_DOMAIN_CHARS = 128
#: Distinct domains a model tracks (metric label values, held-out slices); the rest fold into
#: :data:`OTHER_DOMAIN` (:class:`DomainCap`).
MAX_DOMAINS = 100
OTHER_DOMAIN = "other"
#: Longest any other field may be (``meta``, ``scores``, ``metrics``, an extra field...), in
#: characters of compact JSON.
MAX_FIELD_CHARS = 65_536

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
    "label_limit",
    "unjoined_feedback",
    "invalid_event",
)

#: Unix seconds; never NaN or infinite (JSON would carry them as null, refused downstream).
Timestamp = Annotated[StrictFloat, AllowInfNan(False)] | StrictInt


def now() -> float:
    """Current Unix time in seconds (the ``ts`` of events made here)."""
    return time.time()


class Event(BaseModel):
    """Base of every event: schema version ``v`` and extra fields kept as they came."""

    model_config = ConfigDict(frozen=True, extra="allow")
    #: Fields that may hold nested JSON (bounded by :data:`MAX_DEPTH` with the extra fields).
    nestable: ClassVar[tuple[str, ...]] = ()
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
    nestable: ClassVar[tuple[str, ...]] = ("meta",)


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
    nestable: ClassVar[tuple[str, ...]] = ("metrics",)
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
    nestable: ClassVar[tuple[str, ...]] = ("detail",)
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
        """Wrap the first 4 KiB of ``raw``: as text when valid UTF-8, else base64 (and the first
        1,024 characters of ``error``)."""
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
            error=error[:DLQ_ERROR_CHARS],
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
    """Decode Kafka bytes into ``cls``; raise :class:`InvalidEvent` with a DLQ reason (and
    nothing else, whatever the bytes)."""
    if raw is None:
        raise InvalidEvent("invalid_json", "empty message (tombstone)")
    try:  # fast path: parse and validate in pydantic-core; errors take the precise path below
        return _check_limits(cls.model_validate_json(raw), max_text_chars, len(raw))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("invalid_utf8", f"not valid UTF-8 at byte {exc.start}") from None
    if first["type"] == "json_invalid":  # pydantic-core's parser is the judge (lone surrogates too)
        too_deep = "recursion limit" in first["msg"]
        raise InvalidEvent("invalid_json", TOO_DEEP if too_deep else str(first["msg"]))
    try:  # only JSON that pydantic-core parsed comes here: at most 200 levels deep
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent("invalid_json", f"not JSON: {exc}") from None
    return validate(cls, obj, max_text_chars)


def validate(cls: type[E], obj: object, max_text_chars: int) -> E:
    """Validate a parsed JSON value into ``cls`` with streamcl's limits."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if nests_deeper(obj):
        raise InvalidEvent("invalid_json", TOO_DEEP)
    obj.setdefault("v", SCHEMA_VERSION)
    try:
        event = cls.model_validate(obj)
    except ValidationError as exc:
        reason, detail = _reason_for(exc)
        raise InvalidEvent(reason, detail) from None
    return _check_limits(event, max_text_chars, None)


TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


def nests_deeper(obj: object) -> bool:
    """Whether a parsed value nests deeper than :data:`MAX_DEPTH` (iterative: no recursion; the
    HTTP API bounds its bodies with it too)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_limits(event: E, max_text_chars: int, size: int | None) -> E:
    """streamcl's limits beyond the schema; ``size`` (the raw bytes) spares the measure of
    every field when no field can be that long."""
    values, extra = event.__dict__, event.__pydantic_extra__
    text = values.get("text")
    if text is not None and (len(text) > max_text_chars or not text.strip()):
        _refuse("text", text, max_text_chars, "empty_text", "text_too_long")
    label = values.get("label")
    if label is not None and (len(label) > MAX_LABEL_CHARS or not label.strip()):
        _refuse("label", label, MAX_LABEL_CHARS, "invalid_label", "invalid_label")
    domain = values.get("domain")
    if domain is not None and len(domain) > MAX_DOMAIN_CHARS:
        raise InvalidEvent("invalid_event", f"field 'domain' has {len(domain)} characters, limit {MAX_DOMAIN_CHARS}")
    nested = [values[n] for n in event.nestable if values[n]]
    if (extra or nested) and nests_deeper([*nested, *(extra or {}).values()]):  # the record is level 1
        raise InvalidEvent("invalid_json", TOO_DEEP)
    # compact JSON is at most a few times the raw bytes (1e15 -> 1000000000000000.0)
    if size is None or size > MAX_FIELD_CHARS // 8:
        _check_field_sizes(event)
    return event


def _refuse(name: str, value: str, limit: int, empty: str, too_long: str) -> NoReturn:
    """Raise the reason of a text or label that is blank (``empty``) or over ``limit`` (``too_long``)."""
    if not value.strip():
        raise InvalidEvent(empty, f"{name} is empty")
    raise InvalidEvent(too_long, f"{name} has {len(value)} characters, limit {limit}")


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _check_field_sizes(event: Event) -> None:
    """Every field but the text, label, domain and id (checked apart) within :data:`MAX_FIELD_CHARS`."""
    values = {**event.__dict__, **(event.model_extra or {})}
    for name, value in values.items():
        if name in ("text", "label", "domain", "id") or value is None or isinstance(value, bool | int | float):
            continue
        n = len(value) if isinstance(value, str) else len(_compact(value))
        if n > MAX_FIELD_CHARS:
            raise InvalidEvent("invalid_event", f"field '{name}' has {n} characters, limit {MAX_FIELD_CHARS}")


class DomainCap:
    """Keeps the first ``max_domains`` distinct domains and folds every later one into
    :data:`OTHER_DOMAIN`, so a client cannot grow per-domain metrics, windows and held-out
    slices without bound; ``known`` (a restart's held-out domains) are kept first."""

    def __init__(self, max_domains: int = MAX_DOMAINS, known: Iterable[str] = ()) -> None:
        self.max_domains = max_domains
        self._known: set[str] = set()
        for domain in known:
            self.fold(domain)

    def fold(self, domain: str | None) -> str | None:
        """``domain`` if tracked (or room is left to track it), else :data:`OTHER_DOMAIN`."""
        if domain is None or domain in self._known:
            return domain
        if len(self._known) < self.max_domains:
            self._known.add(domain)
            return domain
        return OTHER_DOMAIN


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
