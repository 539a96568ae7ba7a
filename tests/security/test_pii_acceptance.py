"""Personal data masked at the door (issue 15, point 3), end to end: 1,000 texts with planted
e-mail addresses, phone numbers, card numbers and IBANs go in through the HTTP API and straight
to the texts topic; afterwards none of the planted values is in a topic streamcl wrote, in a
file under the state dir, or in the logs."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from learners.metrics import LearnerMetrics
from learners.service import LearnerService
from learners.settings import LearnerSettings
from services.serving import create_app
from streaming.events import FeedbackEvent, TextEvent
from streaming.joiner import JoinerMetrics, JoinerService
from streaming.kafka import Consumer, Producer
from streaming.pii import ENTITIES

FILLER = (
    "hello the app crashed again after the update and my order did not arrive please refund "
    "it or send a new one soon thanks for the help with my account and the invoice of march"
)
WORDS = FILLER.split()
AREAS = ("212", "312", "415", "617", "646", "718", "202", "305")


def luhn(body: str) -> str:
    """``body`` with its Luhn check digit appended."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    """A Luhn-valid Visa, Mastercard or Amex number, plain or grouped by spaces or dashes."""
    prefix, length = rng.choice([("4", 16), (f"5{rng.randint(1, 5)}", 16), ("37", 15)])
    number = luhn(prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1)))
    sep = rng.choice(["", " ", "-"])
    groups = [number[:4], number[4:10], number[10:]] if length == 15 else [number[i : i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def iban(rng: random.Random) -> str:
    """A checksum-valid German, British, Dutch or French IBAN, compact or grouped by four."""
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    letters = lambda n: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))  # noqa: E731
    country, bban = rng.choice(
        [("DE", digits(18)), ("GB", letters(4) + digits(14)), ("NL", letters(4) + digits(10)), ("FR", digits(23))]
    )
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    code = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4)) if rng.random() < 0.5 else code


def phone(rng: random.Random) -> str:
    """A US, UK, German, French or Indian number in international or US national format."""
    n = rng.randint
    return rng.choice(
        [
            f"+1 {rng.choice(AREAS)}-{n(200, 999)}-{n(1000, 9999)}",
            f"({rng.choice(AREAS)}) {n(200, 999)}-{n(1000, 9999)}",
            f"+44 20 7946 {n(1000, 9999)}",
            f"+49 30 {n(1000000, 9999999)}{n(0, 9)}",
            f"+33 6 {n(10, 38)} {n(10, 99)} {n(10, 99)} {n(10, 99)}",
            f"+91 98{n(10000000, 99999999)}",
        ]
    )


def email(rng: random.Random, i: int) -> str:
    name = rng.choice(["anna", "ben", "chloe", "dev", "emma", "farid"])
    return f"{name}.q{i}x{rng.randint(100, 999)}@{rng.choice(['example.com', 'mail.co.uk', 'firma.de', 'uni.edu'])}"


def planted_texts(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """``n`` support-ticket texts of about 200 characters, each carrying an e-mail address, a phone
    number, a card number and an IBAN; and every value planted."""
    rng = random.Random(seed)
    texts, planted = [], []
    for i in range(n):
        values = [email(rng, i), phone(rng), card(rng), iban(rng)]
        words = [rng.choice(WORDS) for _ in range(22)]
        text = (
            f"{' '.join(words[:8])} mail {values[0]} or call {values[1]}, {' '.join(words[8:15])} "
            f"card {values[2]} refund to {values[3]} {' '.join(words[15:])} order {rng.randint(10, 9999)}"
        )
        texts.append(text)
        planted += values
    return texts, planted


def read_topic(settings, topic: str, timeout_s: float = 5.0) -> list:
    """Every record of ``topic`` (until a poll brings nothing after the end offsets are reached)."""
    c = Consumer(settings, group_id=None)
    c.assign([topic])
    ends = c.end_offsets()
    out, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(out) < sum(ends.values()):
        out += c.poll(0.5)
    c.close()
    return out


def text_of(path: Path) -> bytes:
    """What of a file can hold text: all of it, but of a safetensors file (90 MB of weights per
    version here) only its JSON header; the rest is numbers."""
    if path.suffix != ".safetensors":
        return path.read_bytes()
    with path.open("rb") as f:
        return f.read(8 + int.from_bytes(f.read(8), "little"))


def leaks(blob: bytes, planted: list[str]) -> list[str]:
    return [v for v in planted if v.encode() in blob]


@pytest.mark.integration
def test_planted_pii_found_nowhere(make_settings, make_app, caplog):
    """Personal data was kept raw and forever (DLQ, joiner checkpoint, held-out samples, replay
    buffers, streamcl.labeled): with STREAMCL_PII=mask none of 1,000 texts' planted values is
    found in a topic streamcl wrote, a file under the state dir, or the logs."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="kafka")  # as every streamcl process runs (kafka-python logs wire bytes)
    s = make_settings(pii="mask", join_producer_process=False, max_text_chars=3000)
    texts, planted = planted_texts(1000)
    producer = Producer(s)
    t = s.topics

    # 500 texts through the HTTP API; its replica logs what it predicted on, as Served.predict does
    _, replica = make_app()
    for served in replica.models.values():
        served.stream.pii, served.stream.pii_entities, served.stream.max_text_chars = "mask", ENTITIES, 3000
    client = TestClient(create_app(replica))
    for start in range(0, 500, 50):
        ids = [f"h{i}" for i in range(start, start + 50)]
        r = client.post("/v1/predict", json={"texts": texts[start : start + 50], "ids": ids})
        assert r.status_code == 200, r.text
        _, logged, _ = replica.models["default"].calls[-1]
        for id_, text in zip(ids, logged):
            producer.publish(t.texts, TextEvent(id=id_, text=text, domain="web"))
    assert leaks(caplog.text.encode(), planted) == []
    # 500 texts an application writes to the texts topic itself, 50 of them never labeled
    for i in range(500, 1000):
        producer.publish(t.texts, TextEvent(id=f"a{i}", text=texts[i], domain="app"))
    # bad records carrying personal data: dead-lettered (one over 4 KiB, cut where a value sits)
    bad = [json.dumps({"id": f"b{i}", "text": " ".join(texts[i : i + 20])}).encode() for i in range(0, 100, 20)]
    bad += [f'{{"id": "c{i}", "text": "{texts[i]}'.encode() for i in range(5)]  # broken JSON
    for i, raw in enumerate(bad):
        producer.send(t.texts, raw, key=f"bad{i}")
    for i in range(950):
        producer.publish(t.feedback, FeedbackEvent(id=f"h{i}" if i < 500 else f"a{i}", label=f"l{i % 3}"))
    producer.flush()

    joiner = JoinerService(s, JoinerMetrics(CollectorRegistry()))
    deadline = time.monotonic() + 60
    while joiner.counts["joined"] < 950 or joiner.counts["dlq"] < len(bad):
        assert time.monotonic() < deadline, joiner.status()
        joiner.step(0.2)
    joiner.close()
    assert joiner.status()["pending"]["text"] == 50  # kept in the checkpoint

    ls = LearnerSettings(
        registry_uri=str(s.state_dir / "registry"), batch_size=64, max_length=32, version_every_n=400,
        version_every_s=3600, trainable_layers=0, replay_buffer=500,
    )  # fmt: skip
    metrics = LearnerMetrics(CollectorRegistry())
    learner = LearnerService(s, ls, metrics)
    deadline = time.monotonic() + 120
    while learner.trained_total + metrics.held_out._value.get() < 950:
        assert time.monotonic() < deadline, learner.status()
        learner.step(0.2)
    learner.close()
    producer.close()

    masked = read_topic(s, t.labeled)
    assert len(masked) == 950 and b"<EMAIL_ADDRESS>" in masked[0].value  # the model learned on masked texts
    for topic in t.all():
        records = read_topic(s, topic)
        if topic == t.texts:  # the application's own raw writes are its topic's retention's business
            records = [r for r in records if r.key and r.key.startswith(b"h")]
            assert len(records) == 500
        assert not [leaks(r.value or b"", planted) for r in records if leaks(r.value or b"", planted)], topic
    files = [p for p in Path(s.state_dir).rglob("*") if p.is_file()]
    assert {"holdout.json", "replay.json", "lineage.json", "checkpoint.json"} <= {p.name for p in files}
    assert {str(p): found for p in files if (found := leaks(text_of(p), planted))} == {}
    assert leaks(caplog.text.encode(), planted) == []
