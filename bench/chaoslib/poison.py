"""Poison records for a running platform: one of each kind (JSON nested 10,000 deep, 1 MB of
one field, invalid UTF-8, a wrong type, an unknown event version) on the texts, feedback and
labeled topics, and the check that each reached the DLQ exactly once with a reason."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from streaming.events import DeadLetter
from streaming.kafka import Producer
from streaming.settings import StreamSettings

DEEP = b"[" * 10_000 + b"]" * 10_000
MB = 1_000_000


def poisons(good: dict[str, object], big: str, wrong: str) -> list[bytes]:
    """The five kinds, built on a good event: ``big`` is the field made 1 MB long, ``wrong``
    the field given a wrong type."""
    return [
        DEEP,
        json.dumps({**good, big: "x" * MB}).encode(),
        json.dumps(good).encode()[:-1] + b', "note": "\xc3\x28"}',
        json.dumps({**good, wrong: {"not": "a string"}}).encode(),
        json.dumps({**good, "v": 2}).encode(),
    ]


def publish_poisons(bootstrap: str, prefix: str = "streamcl") -> dict[tuple[str, int], str]:
    """Publish every poison; returns the (topic, offset) of each, with its kind."""
    stream = StreamSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    t = stream.topics
    now = time.time()
    kinds = ("nested", "1MB", "invalid_utf8", "wrong_type", "unknown_version")
    plan = {
        t.texts: poisons({"v": 1, "id": "poison-t", "text": "t", "ts": now}, "text", "text"),
        t.feedback: poisons({"v": 1, "id": "poison-f", "label": "l", "ts": now}, "label", "id"),
        t.labeled: poisons({"v": 1, "id": "poison-l", "text": "t", "label": "l", "ts": now}, "label", "text"),
    }
    p = Producer(stream, client_id="chaos-poison")
    futures = [
        (topic, kind, p.send(topic, payload, key=f"poison-{kind}"))
        for topic, payloads in plan.items()
        for kind, payload in zip(kinds, payloads)
    ]
    p.flush()
    out = {(topic, f.get(timeout=30).offset): kind for topic, kind, f in futures}
    p.close()
    return out


def check_poisons(expected: dict[tuple[str, int], str], dead: list[DeadLetter]) -> dict[str, Any]:
    """Each poison dead-lettered exactly once, with a reason."""
    seen = Counter((d.source_topic, d.offset) for d in dead)
    reasons = {(d.source_topic, d.offset): d.reason for d in dead}
    missing = [f"{t}@{o} ({k})" for (t, o), k in expected.items() if seen[(t, o)] == 0]
    twice = [f"{t}@{o} ({k})" for (t, o), k in expected.items() if seen[(t, o)] > 1]
    return {
        "poisons": len(expected),
        "dead_lettered_once": sum(1 for key in expected if seen[key] == 1),
        "missing": missing,
        "twice": twice,
        "reasons": {f"{t.rsplit('.', 1)[-1]}/{k}": reasons.get((t, o)) for (t, o), k in expected.items()},
    }
