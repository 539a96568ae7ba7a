import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streaming.errors import InvalidEvent
from streaming.events import (
    DLQ_PAYLOAD_BYTES,
    DLQ_REASONS,
    MAX_DEPTH,
    MAX_DOMAIN_CHARS,
    MAX_FIELD_CHARS,
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    DeadLetter,
    DriftEvent,
    FeedbackEvent,
    LabeledExample,
    ModelEvent,
    PredictionEvent,
    TextEvent,
    decode,
    validate,
)


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_text_event_round_trip_keeps_extra_fields():
    ev = decode(TextEvent, raw({"v": 1, "id": "a", "text": "hi", "ts": 1.5, "domain": "d", "x-trace": 7}), 100)
    assert (ev.id, ev.text, ev.ts, ev.domain) == ("a", "hi", 1.5, "d")
    again = decode(TextEvent, ev.to_bytes(), 100)
    assert again == ev
    assert json.loads(ev.to_bytes())["x-trace"] == 7


def test_events_are_frozen():
    ev = FeedbackEvent(id="a", label="pos")
    with pytest.raises(ValidationError):
        ev.label = "neg"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf8", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (raw({"v": 2, "id": "a", "text": "t"}), "unsupported_version"),
        (raw({"text": "t"}), "missing_field"),
        (raw({"id": 5, "text": "t"}), "wrong_type"),
        (raw({"id": "a", "text": ["t"]}), "wrong_type"),
        (raw({"id": "a", "text": "   "}), "empty_text"),
        (raw({"id": "a", "text": "x" * 11}), "text_too_long"),
        (raw({"id": "a", "text": "t", "ts": "yesterday"}), "wrong_type"),
    ],
)
def test_bad_texts_get_a_reason(payload: bytes, reason: str):
    with pytest.raises(InvalidEvent) as info:
        decode(TextEvent, payload, max_text_chars=10)
    assert info.value.reason == reason
    assert info.value.detail


@pytest.mark.parametrize("label", [3, None, "", ["a"]])
def test_bad_labels(label: object):
    with pytest.raises(InvalidEvent) as info:
        decode(FeedbackEvent, raw({"id": "a", "label": label}), 10)
    assert info.value.reason in ("invalid_label", "missing_field")


def test_version_defaults_to_one_and_ts_is_filled():
    ev = decode(LabeledExample, raw({"id": "a", "text": "t", "label": "x"}), 10)
    assert ev.v == 1 and ev.ts > 0


def test_model_event_status_is_checked():
    with pytest.raises(InvalidEvent):
        decode(ModelEvent, raw({"model": "m", "version": 1, "status": "weird", "uri": "u"}), 10)


def test_dead_letter_keeps_first_4k_as_text_or_base64():
    text = DeadLetter.for_message("t", 0, 5, ("é" * 5000).encode(), "invalid_json", "x")
    assert text.payload_encoding == "utf-8"
    assert len(text.payload.encode()) <= DLQ_PAYLOAD_BYTES
    binary = DeadLetter.for_message("t", 1, 6, b"\xff" * 10, "invalid_utf8", "x")
    assert binary.payload_encoding == "base64"
    assert base64.b64decode(binary.payload) == b"\xff" * 10
    assert (binary.source_topic, binary.partition, binary.offset, binary.reason) == ("t", 1, 6, "invalid_utf8")


def test_a_prediction_without_a_label_round_trips():
    # a model that knows no label yet answers label None: its log must not be dead-lettered
    raw = PredictionEvent(id="p", label=None, scores={}, model_version=1).to_bytes()
    assert decode(PredictionEvent, raw, 100).label is None


def test_drift_event_round_trip():
    ev = DriftEvent(detector="ks", kind="input", score=5.0, threshold=4.0, at=120, source="monitor")
    assert decode(DriftEvent, ev.to_bytes(), 100) == ev
    with pytest.raises(InvalidEvent):
        decode(DriftEvent, b'{"v":1,"detector":"ks","kind":"weird","score":1,"at":1,"source":"m"}', 100)


class _Producer:
    def __init__(self):
        self.sent = []

    def publish(self, topic, event, key=None):
        self.sent.append((topic, event, key))


def test_decode_or_dead_letter_returns_the_event_or_dead_letters_and_counts():
    from prometheus_client import CollectorRegistry

    from streaming.deadletter import count_consumed, decode_or_dead_letter
    from streaming.events import Record
    from streaming.metrics import MetricGroup, sample_value

    metrics, producer = MetricGroup(CollectorRegistry()), _Producer()
    good = Record("t.texts", 0, 7, b"a", TextEvent(id="a", text="hi").to_bytes())
    bad = Record("t.texts", 1, 9, b"b", b"{not json")
    assert decode_or_dead_letter(TextEvent, good, 100, producer, "t.dlq", metrics).text == "hi"
    assert decode_or_dead_letter(TextEvent, bad, 100, producer, "t.dlq", metrics) is None
    [(topic, dead, key)] = producer.sent
    assert topic == "t.dlq" and key == "t.texts:1:9"
    assert (dead.reason, dead.source_topic, dead.offset, dead.payload) == ("invalid_json", "t.texts", 9, "{not json")
    text = metrics.exposition()
    assert sample_value(text, "streamcl_dlq_events_total", {"reason": "invalid_json"}) == 1
    assert sample_value(text, "streamcl_events_produced_total", {"topic": "t.dlq"}) == 1
    assert sample_value(text, "streamcl_events_consumed_total", {"topic": "t.texts", "outcome": "ok"}) == 1
    assert sample_value(text, "streamcl_events_consumed_total", {"topic": "t.texts", "outcome": "dlq"}) == 1
    # with a tally, consumed outcomes wait for count_consumed (once per poll)
    tally = {}
    assert decode_or_dead_letter(TextEvent, good, 100, producer, "t.dlq", metrics, tally) is not None
    assert tally == {("t.texts", "ok"): 1}
    count_consumed(metrics, tally)
    assert sample_value(metrics.exposition(), "streamcl_events_consumed_total", {"outcome": "ok"}) == 2


def test_consumer_groups_are_named_in_one_place():
    from streaming.settings import StreamSettings

    s = StreamSettings(consumer_group="g1")
    assert [s.group(c) for c in ("joiner", "learner")] == ["g1.joiner", "g1.learner"]


# --- poison records: whatever the bytes, decode raises InvalidEvent with a reason -------------

#: A valid event of every type, as a JSON object.
GOOD = {
    TextEvent: {"v": 1, "id": "a", "text": "a text", "ts": 1.0, "domain": "d", "meta": {"k": "v"}},
    FeedbackEvent: {"v": 1, "id": "a", "label": "pos", "ts": 1.0},
    LabeledExample: {"v": 1, "id": "a", "text": "a text", "label": "pos", "ts": 1.0, "domain": "d"},
    PredictionEvent: {"v": 1, "id": "a", "label": "pos", "scores": {"pos": 0.9}, "model_version": 3, "ts": 1.0},
    ModelEvent: {"v": 1, "model": "m", "version": 2, "status": "candidate", "metrics": {}, "uri": "u", "ts": 1.0},
    DriftEvent: {"v": 1, "detector": "ks", "kind": "input", "score": 1.0, "at": 3, "source": "monitor", "ts": 1.0},
}
LIMIT = 10_000  # max_text_chars, the default
MB = 1_000_000


def nested(depth: int) -> object:
    """An object ``depth`` levels deep, lists and objects in turn (built without recursion)."""
    value: object = 1
    for i in range(depth):
        value = {"k": value} if (depth - i) % 2 else [value]
    return value


def deep_bytes(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


def reason_of(cls, payload: bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode(cls, payload, LIMIT)
    assert info.value.detail
    return info.value.reason


def oversized_reason(field: str) -> str:
    named = {"text": "text_too_long", "label": "invalid_label", "status": "wrong_type", "kind": "wrong_type"}
    return named.get(field, "invalid_event")  # status and kind are one of a few words


def poisons(cls) -> list[tuple[str, bytes, str]]:
    """(name, bytes, reason) of every poison kind for ``cls``."""
    good = GOOD[cls]
    out = [
        ("deep record", b"[" * 10_000 + b"]" * 10_000, "invalid_json"),
        ("deep object", deep_bytes(10_000), "invalid_json"),
        ("deep extra field", raw({**good, "x": None})[:-5] + b"[" * 10_000 + b"]" * 10_000 + b"}", "invalid_json"),
        ("invalid utf-8", raw(good)[:-1] + b',"x":"\xff\xfe"}', "invalid_utf8"),
        ("lone surrogate", raw({**good, "x": "\ud800"}), "invalid_json"),
        ("unknown version", raw({**good, "v": 2}), "unsupported_version"),
        ("version as text", raw({**good, "v": "1"}), "unsupported_version"),
        ("not an object", raw([good]), "not_an_object"),
        ("infinite ts", raw(good)[:-1].replace(b'"ts": 1.0', b'"ts": 1e999') + b"}", "invalid_event"),
        ("1 MB extra field", raw({**good, "x": "y" * MB}), "invalid_event"),
        ("1 MB number", raw(good)[:-1] + b', "x": ' + b"7" * MB + b"}", "invalid_json"),
    ]
    for field, value in good.items():
        if field == "v":
            continue
        wrong = "invalid_label" if field == "label" else "wrong_type"
        out.append((f"{field} of a wrong type", raw({**good, field: [value]}), wrong))
        if isinstance(value, str):
            out.append((f"1 MB {field}", raw({**good, field: "z" * MB}), oversized_reason(field)))
        if isinstance(value, dict):
            out.append((f"1 MB {field}", raw({**good, field: {"z" * MB: 1}}), "invalid_event"))
    return out


CASES = [(cls, name, payload, reason) for cls in GOOD for name, payload, reason in poisons(cls)]


@pytest.mark.parametrize(("cls", "name", "payload", "reason"), CASES, ids=[f"{c.__name__}-{n}" for c, n, _, _ in CASES])
def test_every_poison_kind_of_every_event_gets_its_reason(cls, name, payload, reason):
    assert reason_of(cls, payload) == reason


@pytest.mark.parametrize("cls", list(GOOD))
def test_the_good_events_decode_and_round_trip(cls):
    ev = decode(cls, raw(GOOD[cls]), LIMIT)
    assert decode(cls, ev.to_bytes(), LIMIT) == ev


def test_nesting_is_bounded_at_max_depth_and_brackets_in_strings_do_not_count():
    ok = {"id": "a", "text": "[{" * 4000 + ' "\\" [[[', "meta": nested(MAX_DEPTH - 1)}  # record + meta: MAX_DEPTH
    assert decode(TextEvent, raw(ok), LIMIT).meta == ok["meta"]
    assert validate(TextEvent, dict(ok), LIMIT).meta == ok["meta"]
    too_deep = {**ok, "meta": nested(MAX_DEPTH)}
    assert reason_of(TextEvent, raw(too_deep)) == "invalid_json"
    with pytest.raises(InvalidEvent) as info:
        validate(TextEvent, too_deep, LIMIT)
    assert info.value.reason == "invalid_json"
    looped: dict = {"id": "a", "text": "t"}
    looped["meta"] = {"self": looped}
    with pytest.raises(InvalidEvent):
        validate(TextEvent, looped, LIMIT)


def test_an_unterminated_string_full_of_escaped_quotes_is_refused():
    # 300k escaped quotes inside 40 brackets: refused by one linear parse
    assert reason_of(TextEvent, b"[" * 40 + b'"' + b'\\"' * 300_000) == "invalid_json"


def test_names_and_other_fields_are_bounded():
    assert decode(FeedbackEvent, raw({"id": "a", "label": "l" * MAX_LABEL_CHARS}), LIMIT).label
    assert reason_of(FeedbackEvent, raw({"id": "a", "label": "l" * (MAX_LABEL_CHARS + 1)})) == "invalid_label"
    assert reason_of(TextEvent, raw({"id": "a" * (MAX_NAME_CHARS + 1), "text": "t"})) == "invalid_event"
    assert (
        reason_of(TextEvent, raw({"id": "a", "text": "t", "domain": "d" * (MAX_DOMAIN_CHARS + 1)})) == "invalid_event"
    )
    fits = {"id": "a", "text": "t", "meta": {"k": "é" * (MAX_FIELD_CHARS - 10)}}
    assert decode(TextEvent, raw(fits), LIMIT).meta == fits["meta"]  # characters, not escaped bytes
    over = {"id": "a", "text": "t", "meta": {"k": "é" * MAX_FIELD_CHARS}}
    assert reason_of(TextEvent, raw(over)) == "invalid_event"
    with pytest.raises(InvalidEvent):
        validate(TextEvent, over, LIMIT)


def test_a_dead_letter_of_a_huge_poison_stays_small():
    from streaming.events import Record

    rec = Record("t.predictions", 0, 1, None, raw({"id": "a", "model_version": 1, "scores": {"k" * MB: "x"}}))
    with pytest.raises(InvalidEvent) as info:
        decode(PredictionEvent, rec.value, LIMIT)
    assert len(info.value.detail) > MB  # the problem names the field
    dead = rec.dead_letter(info.value.reason, info.value.detail)
    assert len(dead.to_bytes()) < 8 * 1024


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(GOOD)), st.binary(max_size=512))
def test_decode_of_arbitrary_bytes_raises_only_invalid_event(cls, payload):
    try:
        decode(cls, payload, LIMIT)
    except InvalidEvent as exc:
        assert exc.reason in DLQ_REASONS


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(GOOD)), st.data())
def test_what_decode_accepts_can_be_published_again(cls, data):
    # a good event with one field replaced or added: refused with a reason, or re-encodable
    good = dict(GOOD[cls])
    field = data.draw(st.sampled_from([*good, "x"]))
    good[field] = data.draw(JSON)
    payload = json.dumps(good, allow_nan=True).encode("utf-8", "surrogatepass")
    try:
        ev = decode(cls, payload, LIMIT)
    except InvalidEvent as exc:
        assert exc.reason in DLQ_REASONS
        return
    again = ev.to_bytes()  # what a consumer publishes on (the joiner): it decodes the same again
    assert decode(cls, again, LIMIT).to_bytes() == again
