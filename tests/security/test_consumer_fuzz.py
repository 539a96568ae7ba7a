"""Poison pills (issue 15): a fuzz of every consumer on each topic it reads, on a real broker.

A seeded generator builds bad records of every kind — random bytes, JSON nested 1,000+ deep,
2 MB fields, a wrong type in each field, valid JSON of another event kind, fields past their
bounds, unknown labels past ``STREAMCL_MAX_LABELS`` — spread among good records on the texts,
feedback and predictions topics (joiner, drift monitor), labeled (learner) and models
(controller). Each consumer runs in its :class:`~streaming.runtime.ServiceHost`, as in the
cluster, and: no step fails (``streamcl_service_step_errors_total`` stays 0), every bad record
is in the DLQ once with the reason ``decode`` gives it (one of ``DLQ_REASONS``) and a detail,
kept as ``STREAMCL_DLQ_PAYLOAD_BYTES`` and ``STREAMCL_PII`` say, and every good record is
processed (joined, observed, scored, trained, decided). The monitor dead-letters nothing: the
joiner does for the topics they share.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from learners.metrics import LearnerMetrics
from learners.registry import LocalRegistry, NewVersion
from learners.service import LearnerService
from learners.settings import LearnerSettings
from services.controller import ModelController
from services.metrics import ControllerMetrics, MonitorMetrics
from services.monitor import DriftMonitor
from services.settings import MonitorSettings
from streaming import DeadLetter, DriftEvent, ModelEvent, Record, TextEvent
from streaming.deadletter import DeadLetterPolicy, decode_or_dead_letter
from streaming.errors import InvalidEvent
from streaming.events import (
    DLQ_REASONS,
    MAX_DEPTH,
    TOO_DEEP,
    Event,
    FeedbackEvent,
    LabeledExample,
    PredictionEvent,
    decode,
)
from streaming.joiner import JoinerMetrics, JoinerService
from streaming.kafka import Consumer, Producer
from streaming.metrics import MetricGroup, sample_value
from streaming.pii import Masker
from streaming.runtime import Backoff, ServiceHost

SEED = 15
HUGE = 2 * 1024 * 1024  # a 2 MB field (the broker takes messages up to 8 MiB)
#: Values of every JSON type but the right one (each field gets those its schema refuses).
WRONG_VALUES: tuple[Any, ...] = (7, -1.5, True, "s", [], {}, None, ["x"], {"k": "v"})
PLANTED = "jo.smith@example.com"
#: A fast learner that trains every example and writes a version only when told.
SMALL_LEARNER: dict[str, Any] = {"strategy": "naive", "max_length": 24, "trainable_layers": 0, "batch_size": 16}
SMALL_LEARNER |= {"version_every_n": 10_000, "version_every_s": 3600, "eval_holdout_every": 0, "drift_act_on": []}

Bad = tuple[str, bytes | None]  # (kind, payload)


# --------------------------------------------------------------------------- the generator


def nested(depth: int, rng: random.Random) -> str:
    """JSON ``depth`` levels deep, lists and objects mixed (built as text: no recursion)."""
    opens = [rng.choice(("[", '{"a":')) for _ in range(depth)]
    return "".join(opens) + "1" + "".join("]" if o == "[" else "}" for o in reversed(opens))


def with_field(good: dict[str, Any], name: str, value_json: str) -> bytes:
    """``good`` as JSON with field ``name`` set to the JSON text ``value_json`` (any depth, any size)."""
    rest = json.dumps({k: v for k, v in good.items() if k != name})
    return (rest[:-1] + (", " if len(rest) > 2 else "") + f'"{name}": {value_json}}}').encode()


def random_bytes(rng: random.Random, n: int) -> list[Bad]:
    """Garbage of any length, and the short values that are JSON but not an event."""
    edge = [b"", b"null", b"[]", b"{}", b'"text"', b"1e999", b"\xff\xfe\x00", b"{" * 3, None]
    return [("random_bytes", rng.randbytes(rng.randint(1, 3000))) for _ in range(n)] + [
        ("random_bytes", rng.choice(edge)) for _ in range(n)
    ]


def deep(cls: type[Event], good: dict[str, Any], rng: random.Random, n: int) -> list[Bad]:
    """Nesting 1,000–5,000 deep (the root, a field the schema nests, an unknown field), and
    just past MAX_DEPTH inside an unknown field (the path pydantic-core parses)."""
    out: list[Bad] = []
    for _ in range(n):
        depth = rng.randint(1000, 5000)
        out.append(("deep", nested(depth, rng).encode()))
        field = rng.choice([*cls.nestable, "extra"])
        out.append(("deep", with_field(good, field, nested(depth, rng))))
    out.append(("deep", with_field(good, "extra", nested(MAX_DEPTH + 8, rng))))
    return out


def huge(cls: type[Event], good: dict[str, Any], rng: random.Random) -> list[Bad]:
    """A 2 MB label and domain (where ``cls`` has them), a 2 MB value in another string field
    of the schema and in an unknown field, and 2 MB of unfinished JSON."""
    strings = [name for name in good if isinstance(good[name], str)]
    fields = dict.fromkeys([*(f for f in ("label", "domain") if f in cls.model_fields), rng.choice(strings)])
    out: list[Bad] = [("huge", with_field(good, f, json.dumps("x" * HUGE))) for f in fields]
    return [*out, ("huge", with_field(good, "note", json.dumps("y" * HUGE))), ("huge", b'{"id": "' + b"z" * HUGE)]


def wrong_types(cls: type[Event], good: dict[str, Any], rng: random.Random, max_text_chars: int) -> list[Bad]:
    """For each field of ``cls``, two values of a type its schema refuses."""
    out: list[Bad] = []
    for name in cls.model_fields:
        if name == "v":
            continue
        refused = [v for v in WRONG_VALUES if _refuses(cls, json.dumps({**good, name: v}).encode(), max_text_chars)]
        assert refused, f"{cls.__name__}.{name} takes a value of every type"
        out += [
            ("wrong_type", json.dumps({**good, name: v}).encode()) for v in rng.sample(refused, min(2, len(refused)))
        ]
    return out


def other_kinds(cls: type[Event], max_text_chars: int) -> list[Bad]:
    """Valid events of the other kinds, those ``cls`` cannot read (a TextEvent's fields are in a
    LabeledExample: a labeled example read as a text is a good text)."""
    examples: list[Event] = [
        TextEvent(id="k1", text="a text"),
        FeedbackEvent(id="k2", label="pos"),
        LabeledExample(id="k3", text="a text", label="pos"),
        PredictionEvent(id="k4", label="pos", scores={"pos": 1.0}, model_version=1),
        ModelEvent(model="default", version=1, status="candidate", uri="file:///x"),
        DriftEvent(detector="d", kind="input", score=1.0, at=1, source="monitor"),
        DeadLetter.for_message("t", 0, 0, b"x", "invalid_json", "x"),
    ]
    kinds = [("other_kind", ev.to_bytes()) for ev in examples if not isinstance(ev, cls)]
    return [(k, raw) for k, raw in kinds if _refuses(cls, raw, max_text_chars)]


def past_bounds(cls: type[Event], good: dict[str, Any], max_text_chars: int) -> list[Bad]:
    """Each bounded field of ``cls`` just past its bound, blank, or not a finite number."""
    fields = cls.model_fields
    cases: list[dict[str, Any]] = [{"v": 2}]
    if "id" in fields:
        cases += [{"id": "i" * 257}, {"id": ""}]
    if "text" in fields:
        cases += [{"text": "t" * (max_text_chars + 1)}, {"text": "   "}]
    if "label" in fields:
        cases += [{"label": "l" * 129}, {"label": " "}]
    if "domain" in fields:
        cases += [{"domain": "d" * 129}]
    if "meta" in fields or "metrics" in fields:
        cases += [{"meta" if "meta" in fields else "metrics": {"k": "m" * 70_000}}]
    raws = [json.dumps({**good, **case}).encode() for case in cases]
    raws += [with_field(good, "ts", "1e999"), with_field(good, "ts", "NaN")]
    return [("bounds", raw) for raw in raws]


def bad_records(
    cls: type[Event], good: dict[str, Any], rng: random.Random, max_text_chars: int, n: int = 3
) -> list[Bad]:
    """Every kind of bad record for a topic of ``cls`` events, shuffled; each is refused by ``decode``."""
    bad = random_bytes(rng, n) + deep(cls, good, rng, n) + huge(cls, good, rng)
    bad += wrong_types(cls, good, rng, max_text_chars) + other_kinds(cls, max_text_chars)
    bad += past_bounds(cls, good, max_text_chars)
    taken = [(kind, (raw or b"")[:80]) for kind, raw in bad if not _refuses(cls, raw, max_text_chars)]
    assert not taken, f"decode takes these {cls.__name__} records: {taken}"
    rng.shuffle(bad)
    return bad


def _refuses(cls: type[Event], raw: bytes | None, max_text_chars: int) -> bool:
    return _reason(cls, raw, max_text_chars) is not None


def _reason(cls: type[Event], raw: bytes | None, max_text_chars: int) -> str | None:
    try:
        decode(cls, raw, max_text_chars)
    except InvalidEvent as exc:
        return exc.reason
    return None


# --------------------------------------------------------------------------- on the broker


Reasons = Callable[[bytes | None], str]


def publish(
    settings: Any, topic: str, good: list[bytes], bad: list[Bad], reasons: Reasons, first_bad: int = 0
) -> dict[int, str]:
    """``good`` with ``bad`` at seeded places among them (none before good record ``first_bad``);
    returns the reason expected at each bad offset."""
    rng = random.Random(f"{SEED}:{topic}")
    slots = sorted(rng.randint(first_bad, len(good)) for _ in bad)
    p = Producer(settings)
    expected: dict[int, str] = {}
    offset, b = 0, 0
    for i in range(len(good) + 1):
        while b < len(bad) and slots[b] == i:
            _, raw = bad[b]
            p.send(topic, raw, key=f"bad{b}")  # type: ignore[arg-type]
            expected[offset] = reasons(raw)
            offset, b = offset + 1, b + 1
        if i < len(good):
            p.send(topic, good[i], key=f"good{i}")
            offset += 1
    p.flush()
    p.close()
    return expected


def read_all(settings: Any, topic: str, at_least: int, timeout_s: float = 30.0) -> list[Record]:
    c = Consumer(settings, group_id=None)
    c.assign([topic])
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < at_least and time.monotonic() < deadline:
        out += c.poll(0.5)
    out += c.poll(1.0)  # and nothing more
    c.close()
    return out


def dead_letters(settings: Any, n: int) -> dict[tuple[str, int], DeadLetter]:
    """The DLQ by (source topic, offset); each source record there once."""
    dead = [DeadLetter.model_validate_json(r.value or b"") for r in read_all(settings, settings.topics.dlq, n)]
    by_source = {(d.source_topic, d.offset): d for d in dead}
    assert len(by_source) == len(dead) == n, sorted((d.source_topic, d.offset, d.reason) for d in dead)
    return by_source


def check_dead_letters(
    dead: dict[tuple[str, int], DeadLetter], expected: dict[tuple[str, int], str], keep: int
) -> None:
    """Every bad record dead-lettered with its reason and a detail, its payload within ``keep`` bytes."""
    assert set(dead) == set(expected)
    for where, d in dead.items():
        assert d.reason == expected[where] and d.reason in DLQ_REASONS, (where, d.reason, d.error)
        assert d.error.strip(), where
        raw = base64.b64decode(d.payload) if d.payload_encoding == "base64" else d.payload.encode()
        assert len(raw) <= keep, (where, len(raw))


def run_hosts(hosts: list[ServiceHost], done: Callable[[], bool], timeout_s: float = 90.0) -> None:
    """Wait until ``done`` (every host up or building), then stop the hosts; no step may fail."""
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert time.monotonic() < deadline, [h.status() for h in hosts]
            for h in hosts:
                assert h.errors == 0, (h.source, h.last_error)
            time.sleep(0.2)
    finally:
        for h in hosts:
            h.stop()
    for h in hosts:
        assert h.errors == 0, (h.source, h.last_error)
        errors = sample_value(h.exposition(), "streamcl_service_step_errors_total", {"component": h.source})
        assert errors == 0, h.source


def _consumed(host: ServiceHost, topic: str, outcome: str) -> float:
    return sample_value(host.exposition(), "streamcl_events_consumed_total", {"topic": topic, "outcome": outcome}) or 0


def _host(factory: Callable[[Any], Any], source: str, group: Callable[[CollectorRegistry], MetricGroup]) -> ServiceHost:
    return ServiceHost(factory, source, group, push_metrics=False, backoff=Backoff(0.2, 1.0))


@pytest.mark.integration
def test_poison_pills_joiner_and_monitor_fuzz(make_settings):
    """Poison pills: a bad record on texts, feedback or predictions made a consumer fail a step or
    skip the good records polled with it; each is dead-lettered with its reason, the rest joined."""
    s = make_settings(pii="mask", dlq_payload_bytes=1024)
    t, n, limit, rng = s.topics, 150, s.max_text_chars, random.Random(SEED)
    texts = [TextEvent(id=f"id{i}", text=f"good text {i}", domain=f"d{i % 7}").to_bytes() for i in range(n)]
    feedback = [FeedbackEvent(id=f"id{i}", label=("pos", "neg")[i % 2]).to_bytes() for i in range(n)]
    predictions = [
        PredictionEvent(id=f"id{i}", label="pos", scores={"pos": 0.6, "neg": 0.4}, model_version=1).to_bytes()
        for i in range(n)
    ]
    planted = ("wrong_type", json.dumps({"id": "pii", "text": f"write to {PLANTED}", "ts": "today"}).encode())
    cases: dict[str, tuple[type[Event], list[bytes], dict[str, Any]]] = {
        t.texts: (TextEvent, texts, {"id": "b", "text": "t", "domain": "d", "meta": {"k": 1}}),
        t.feedback: (FeedbackEvent, feedback, {"id": "b", "label": "pos"}),
        t.predictions: (PredictionEvent, predictions, {"id": "b", "scores": {"pos": 1.0}, "model_version": 1}),
    }
    expected: dict[tuple[str, int], str] = {}
    bad_counts: dict[str, int] = {}
    for topic, (cls, good, template) in cases.items():
        bad = bad_records(cls, template, rng, limit) + ([planted] if cls is TextEvent else [])
        at = publish(s, topic, good, bad, lambda raw, cls=cls: _reason(cls, raw, limit) or "?")
        expected |= {(topic, o): r for o, r in at.items()}
        bad_counts[topic] = len(bad)
    total = sum(len(good) for _, good, _ in cases.values()) + sum(bad_counts.values())

    joiner = _host(lambda m: JoinerService(s, m), "joiner", JoinerMetrics)
    monitor = _host(
        lambda m: DriftMonitor(s, MonitorSettings(drift_max_texts_per_s=50), LearnerSettings(), m),
        "monitor",
        MonitorMetrics,
    )

    def monitored(topic: str, outcome: str) -> float:
        labels = {"topic": topic, "outcome": outcome}
        return sample_value(monitor.exposition(), "streamcl_monitor_events_total", labels) or 0

    def done() -> bool:
        joined = joiner.service is not None and joiner.service.counts["consumed"] == total
        seen = sum(monitored(tp, o) for tp in (t.texts, t.predictions) for o in ("observed", "invalid"))
        return joined and seen == 2 * n + bad_counts[t.texts] + bad_counts[t.predictions]

    run_hosts([joiner, monitor], done)
    j = joiner.service
    assert j is not None
    assert (j.counts["joined"], j.counts["dlq"]) == (n, len(expected))
    assert sum(j.state.live.totals.values()) == n  # every good prediction scored against its feedback
    labeled = [LabeledExample.model_validate_json(r.value) for r in read_all(s, t.labeled, n)]
    assert sorted(e.id for e in labeled) == sorted(f"id{i}" for i in range(n))  # each once
    for topic in cases:
        assert _consumed(joiner, topic, "dlq") == bad_counts[topic] and _consumed(joiner, topic, "ok") == n
    for topic in (t.texts, t.predictions):  # the monitor counts the poisons and goes on
        assert (monitored(topic, "observed"), monitored(topic, "invalid")) == (n, bad_counts[topic])
    dead = dead_letters(s, len(expected))
    check_dead_letters(dead, expected, keep=1024)
    assert not any(PLANTED in d.payload or PLANTED in d.error for d in dead.values())  # STREAMCL_PII=mask


@pytest.mark.integration
def test_poison_pills_learner_fuzz(make_settings, tmp_path):
    """Poison pills: a bad record on the labeled topic made the learner fail a step (and lose its
    batch); each is dead-lettered with its reason — new labels past STREAMCL_MAX_LABELS too — and
    every good example is trained once."""
    s = make_settings(max_labels=2, max_domains=50, dlq_payload_bytes=256)
    t, n, limit, rng = s.topics, 100, s.max_text_chars, random.Random(SEED + 1)
    good = [
        LabeledExample(id=f"e{i}", text=f"good text {i}", label=("pos", "neg")[i % 2], domain=f"d{i}").to_bytes()
        for i in range(n)
    ]  # 100 domains: past STREAMCL_MAX_DOMAINS=50 they fold into "other", and are trained all the same
    template = {"id": "b", "text": "t", "label": "pos", "domain": "d"}
    bad = bad_records(LabeledExample, template, rng, limit)
    unknown = [
        ("label_limit", json.dumps({**template, "id": f"new{i}", "label": f"new{i}"}).encode()) for i in range(5)
    ]
    bad += unknown

    def reason(raw: bytes | None) -> str:
        return _reason(LabeledExample, raw, limit) or "label_limit"  # only the unknown labels decode

    at = publish(s, t.labeled, good, bad, reason, first_bad=4)  # pos and neg are known first
    settings = LearnerSettings(registry_uri=str(tmp_path / "registry"), **SMALL_LEARNER)
    host = _host(lambda m: LearnerService(s, settings, m), "learner", LearnerMetrics)
    total = n + len(bad)
    run_hosts(
        [host], lambda: host.service is not None and host.service.status()["offsets"].get(f"{t.labeled}:0") == total
    )
    svc = host.service
    assert svc is not None
    trained = list(svc.versions.lineage["trained"])
    for meta in svc.registry.versions():  # and whatever a version took (a drift snapshot)
        trained += (svc.registry.lineage(meta.version) or {}).get("trained", [])
    assert sorted(trained) == sorted(f"e{i}" for i in range(n))  # each once
    skipped = svc.versions.lineage["skipped"]
    assert sorted(skipped) == sorted(
        [f"{t.labeled}:0:{o}" for o, r in at.items() if r != "label_limit"] + [f"new{i}" for i in range(5)]
    )
    assert sorted(svc.model.labels) == ["neg", "pos"]
    assert _consumed(host, t.labeled, "dlq") == len(bad) - len(unknown) and _consumed(host, t.labeled, "ok") == n + 5
    check_dead_letters(dead_letters(s, len(at)), {(t.labeled, o): r for o, r in at.items()}, keep=256)


@pytest.mark.integration
def test_poison_pills_controller_fuzz(make_settings, tmp_path):
    """Poison pills: a bad record on the models topic made the controller fail a step; each is
    dead-lettered with its reason (no payload kept with STREAMCL_DLQ_PAYLOAD_BYTES=0), and the
    newest candidate announced among them is promoted."""
    s = make_settings(dlq_payload_bytes=0)
    t, limit, rng = s.topics, s.max_text_chars, random.Random(SEED + 2)
    reg = LocalRegistry(tmp_path / "registry")
    reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status="promoted"))
    reg.set_serving(1)
    for parent in range(1, 6):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(parent=parent))
    good = [
        ModelEvent(model="default", version=v, status="candidate", parent=v - 1, uri=reg.version_uri(v)).to_bytes()
        for v in range(2, 7)
    ] + [
        ModelEvent(model="other", version=v, status="candidate", uri="file:///elsewhere").to_bytes() for v in range(10)
    ]
    template = {"model": "default", "version": 9, "status": "candidate", "uri": "file:///x", "metrics": {"a": 1}}
    bad = bad_records(ModelEvent, template, rng, limit)
    at = publish(s, t.models, good, bad, lambda raw: _reason(ModelEvent, raw, limit) or "?")
    host = _host(lambda m: ModelController(s, reg, m), "controller", ControllerMetrics)

    def done() -> bool:
        return (
            reg.serving() == 6
            and _consumed(host, t.models, "dlq") == len(bad)
            and _consumed(host, t.models, "ok") >= len(good)
        )

    run_hosts([host], done)
    assert reg.meta(6).status == "promoted"
    check_dead_letters(dead_letters(s, len(at)), {(t.models, o): r for o, r in at.items()}, keep=0)


# --------------------------------------------------------------------------- the deep-JSON reason


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1500 + b"]" * 1500,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        with_field({"id": "a", "text": "t"}, "meta", nested(1200, random.Random(1))),
        with_field({"id": "a", "text": "t"}, "extra", nested(MAX_DEPTH + 8, random.Random(2))),
        b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    ],
    ids=["list-1500", "object-2000", "meta-1200", "extra-40", "object-33"],
)
def test_deep_json_dead_letter_names_the_nesting_limit(raw, masker):
    """Poison pills: JSON nested ~2,000 deep raised RecursionError; its dead letter now says it
    was refused for nesting past MAX_DEPTH, whatever the depth and the DLQ policy."""
    with pytest.raises(InvalidEvent) as info:
        decode(TextEvent, raw, 100)
    assert (info.value.reason, info.value.detail) == ("invalid_json", TOO_DEEP)
    assert f"nested deeper than {MAX_DEPTH} levels" in TOO_DEEP
    sent: list[DeadLetter] = []

    class Producer_:
        def publish(self, topic: str, event: Any, key: str | None = None) -> None:
            sent.append(event)

    metrics = MetricGroup(CollectorRegistry())
    rec = Record("t.texts", 0, 7, b"k", raw)
    for policy in (None, DeadLetterPolicy(0, None), DeadLetterPolicy(64, masker)):
        assert decode_or_dead_letter(TextEvent, rec, 100, Producer_(), "t.dlq", metrics, policy=policy) is None
    assert [(d.reason, d.error, d.offset) for d in sent] == [("invalid_json", TOO_DEEP, 7)] * 3
    assert sample_value(metrics.exposition(), "streamcl_dlq_events_total", {"reason": "invalid_json"}) == 3


def test_fuzz_generator_makes_only_records_decode_refuses():
    """The fuzz's own check: every generated kind is refused by ``decode`` for each event kind a
    consumer reads, so the broker tests' "bad" is bad by construction."""
    rng = random.Random(SEED)
    templates: dict[type[Event], dict[str, Any]] = {
        TextEvent: {"id": "b", "text": "t"},
        FeedbackEvent: {"id": "b", "label": "pos"},
        LabeledExample: {"id": "b", "text": "t", "label": "pos"},
        PredictionEvent: {"id": "b", "scores": {"pos": 1.0}, "model_version": 1},
        ModelEvent: {"model": "m", "version": 1, "status": "candidate", "uri": "u"},
    }
    for cls, template in templates.items():
        assert _reason(cls, json.dumps(template).encode(), 100) is None  # the template itself is good
        bad = bad_records(cls, template, rng, 100, n=2)
        kinds = {kind for kind, _ in bad}
        assert kinds == {"random_bytes", "deep", "huge", "wrong_type", "other_kind", "bounds"}, cls
        assert all(_reason(cls, raw, 100) in DLQ_REASONS for _, raw in bad)


def test_nested_builds_json_of_the_depth_asked():
    text = nested(5, random.Random(0))
    value, depth = json.loads(text), 0
    while isinstance(value, list | dict):
        value, depth = (value[0] if isinstance(value, list) else value["a"]), depth + 1
    assert (depth, value) == (5, 1)
    assert json.loads(with_field({"id": "a"}, "x", "[[1]]")) == {"id": "a", "x": [[1]]}
    assert json.loads(with_field({}, "x", "2")) == {"x": 2}
