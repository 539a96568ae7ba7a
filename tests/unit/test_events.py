import base64
import json

import pytest
from pydantic import ValidationError

from streaming.errors import InvalidEvent
from streaming.events import (
    DLQ_PAYLOAD_BYTES,
    DeadLetter,
    DriftEvent,
    FeedbackEvent,
    LabeledExample,
    ModelEvent,
    PredictionEvent,
    TextEvent,
    decode,
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
