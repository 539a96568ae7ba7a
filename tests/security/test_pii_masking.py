"""Personal data masked at the door (issue 15, point 3): the masker entity by entity, its
settings, the dead letter's payload, and the HTTP predict path."""

from __future__ import annotations

import base64
import random

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_pii_acceptance import card, iban, luhn, phone, planted_texts

from services.serving import create_app
from streaming.deadletter import DeadLetterPolicy
from streaming.events import DLQ_PAYLOAD_BYTES, DeadLetter
from streaming.pii import ENTITIES, Masker, masker_for
from streaming.settings import StreamSettings


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker()


@pytest.mark.parametrize(
    ("entity", "value"),
    [
        ("EMAIL_ADDRESS", "jane.doe+tickets@example.co.uk"),
        ("PHONE_NUMBER", "+44 20 7946 0958"),
        ("PHONE_NUMBER", "(415) 555-0132"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("CREDIT_CARD", "5500-0000-0000-0004"),
        ("CREDIT_CARD", "378282246310005"),
        ("IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("IBAN_CODE", "GB82WEST12345698765432"),
        ("IP_ADDRESS", "192.168.10.42"),
        ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("URL_WITH_CREDENTIALS", "postgres://admin:s3cret@db.example.com:5432/prod"),
    ],
)
def test_every_entity_masked(masker, entity, value):
    """Texts were kept raw: each entity type is replaced by its name, the words around it kept."""
    assert masker.mask(f"hi, it is {value} here") == f"hi, it is <{entity}> here"


def test_card_failing_luhn_not_masked():
    """A number that merely looks like a card (an order number) is not a card: Luhn decides."""
    masker = Masker(["CREDIT_CARD"])  # (the phone recogniser may still take such digits for a phone)
    rng = random.Random(3)
    for _ in range(50):
        good = card(rng)
        digits = [c for c in good if c.isdigit()]
        last = str((int(digits[-1]) + 1) % 10)
        bad = good[:-1] + last
        assert masker.mask(f"card {good} ok") == "card <CREDIT_CARD> ok"
        assert masker.mask(f"order {bad} ok") == f"order {bad} ok"
    assert luhn("7992739871") == "79927398713"


def test_iban_bad_checksum_not_masked():
    """An IBAN is masked only when its mod-97 checksum holds."""
    masker = Masker(["IBAN_CODE"])
    rng = random.Random(4)
    for _ in range(50):
        good = iban(rng)
        check = int(good[2:4])
        bad = f"{good[:2]}{(check + 1) % 100:02d}{good[4:]}"
        assert masker.mask(f"to {good} now") == "to <IBAN_CODE> now"
        assert masker.mask(f"to {bad} now") == f"to {bad} now"


def test_planted_values_all_masked(masker):
    """Every generated phone, card, IBAN and e-mail of the acceptance run is recognised."""
    rng = random.Random(5)
    for _ in range(200):
        value = phone(rng)
        assert masker.mask(f"call {value} today") == "call <PHONE_NUMBER> today", value
    texts, planted = planted_texts(200, seed=11)
    out = masker.mask_many(texts)
    assert [v for v in planted if any(v in t for t in out)] == []
    assert all(t.count("<") >= 4 for t in out)  # a short order number may pass for a phone number


def test_plain_text_untouched(masker):
    """Text without personal data comes out as it went in (dates, times, versions, prices)."""
    for text in ("great product, 5 stars", "at 12:30 on 2024-01-02 v3.14 for $19.99", "C++::std and a@b"):
        assert masker.mask(text) == text


def test_masking_is_deterministic(masker):
    """The same text masks the same way in every process (the joiner and the API agree)."""
    texts, _ = planted_texts(20, seed=1)
    assert masker.mask_many(texts) == Masker().mask_many(texts)


def test_entities_subset():
    """Only the entity types asked for are masked."""
    m = Masker(["EMAIL_ADDRESS"])
    assert m.mask("a.b@example.com 4111 1111 1111 1111") == "<EMAIL_ADDRESS> 4111 1111 1111 1111"


def test_unknown_entity_refused_at_start_up(monkeypatch):
    """A misspelt entity would silently mask nothing: the settings refuse it, listing the valid ones."""
    monkeypatch.setenv("STREAMCL_PII_ENTITIES", "EMAIL_ADDRESS,SSN")
    with pytest.raises(ValidationError, match="unknown entity 'SSN'; valid: EMAIL_ADDRESS, PHONE_NUMBER"):
        StreamSettings()
    monkeypatch.setenv("STREAMCL_PII_ENTITIES", "PERSON")
    with pytest.raises(ValidationError, match="PERSON is not available"):
        StreamSettings()
    monkeypatch.setenv("STREAMCL_PII_ENTITIES", "email_address, iban_code")
    monkeypatch.setenv("STREAMCL_PII", "mask")
    s = StreamSettings()
    assert s.pii_entities == ("EMAIL_ADDRESS", "IBAN_CODE")
    assert masker_for(s).entities == ("EMAIL_ADDRESS", "IBAN_CODE")  # type: ignore[union-attr]


def test_masking_off_by_default():
    """Masking is opt-in: off keeps today's behaviour and builds no masker."""
    s = StreamSettings()
    assert (s.pii, s.pii_entities, s.dlq_payload_bytes) == ("off", ENTITIES, DLQ_PAYLOAD_BYTES)
    assert masker_for(s) is None


def _dead(raw: bytes) -> DeadLetter:
    return DeadLetter.for_message("t.texts", 0, 7, raw, "invalid_json", "bad")


def test_dlq_payload_masked_and_bounded(masker):
    """The DLQ kept the first 4 KiB raw: it is masked, and STREAMCL_DLQ_PAYLOAD_BYTES bounds it (0: none)."""
    raw = b'{"id": "x", "text": "mail jane@example.com card 4111 1111 1111 1111'
    out = DeadLetterPolicy(4096, masker).apply(_dead(raw))
    assert out.payload == '{"id": "x", "text": "mail <EMAIL_ADDRESS> card <CREDIT_CARD>'
    assert DeadLetterPolicy(0, None).apply(_dead(raw)).payload == ""
    assert DeadLetterPolicy(10, None).apply(_dead(raw)).payload == raw[:10].decode()
    dead = _dead(raw)
    assert DeadLetterPolicy(4096, None).apply(dead) is dead
    binary = b"\xff\xfe mail jane@example.com"
    assert _dead(binary).payload_encoding == "base64"
    out = DeadLetterPolicy(4096, masker).apply(_dead(binary))
    assert (out.payload, out.payload_encoding) == ("\ufffd\ufffd mail <EMAIL_ADDRESS>", "utf-8")
    assert base64.b64decode(DeadLetterPolicy(3, None).apply(_dead(binary)).payload) == binary[:3]


def test_dlq_cut_value_dropped(masker):
    """A value cut by the 4 KiB head is no longer recognised: the cut word is dropped, not kept raw."""
    raw = ("x" * (DLQ_PAYLOAD_BYTES - 12) + " jane.doe@example.com tail").encode()
    out = DeadLetterPolicy(4096, masker).apply(_dead(raw))
    assert "jane.doe" not in out.payload and out.payload == "x" * (DLQ_PAYLOAD_BYTES - 12)


def test_http_predict_masks_before_logging(make_app):
    """The API logged and predicted on the raw text: with masking on, the replica only sees masked text."""
    _, replica = make_app()
    for served in replica.models.values():
        served.stream.pii, served.stream.pii_entities = "mask", ENTITIES
    c = TestClient(create_app(replica))
    assert c.post("/v1/predict", json={"texts": ["mail jane@example.com", "fine"]}).status_code == 200
    assert c.post("/v1/models/news/predict", json={"texts": ["call +44 20 7946 0958"]}).status_code == 200
    assert replica.models["default"].calls == [("predict", ["mail <EMAIL_ADDRESS>", "fine"], None)]
    assert replica.models["news"].calls == [("predict", ["call <PHONE_NUMBER>"], None)]
    _, plain = make_app()
    TestClient(create_app(plain)).post("/v1/predict", json={"texts": ["mail jane@example.com"]})
    assert plain.models["default"].calls == [("predict", ["mail jane@example.com"], None)]
