"""Personal data masked at the door: every text that enters streamcl can be masked before it is
logged, joined, trained on, stored or dead-lettered (``STREAMCL_PII=mask``).

:class:`Masker` runs Microsoft Presidio's pattern recognisers (``presidio-analyzer``) with no NLP
model (its ``NoOpNlpEngine``: nothing is downloaded, at start-up or later) and replaces every
span found with its entity name: ``write to <EMAIL_ADDRESS>``. Card numbers are masked only when
their Luhn checksum holds and IBANs only when their mod-97 checksum does (Presidio validates
both), so an order number is not a card. Person names need a NER model, which no package serves
offline: ``PERSON`` is not offered. Presidio (and spaCy under it) is imported when a Masker is
built, never at the import of this module: a process with masking off does not pay for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streaming.errors import ConfigError

__all__ = ["ENTITIES", "Masker", "checked_entities", "masker_for"]

#: The entity types a Masker can mask, each a recogniser that runs offline.
ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL_WITH_CREDENTIALS")
#: Entity types asked for that need a model no package serves offline.
UNAVAILABLE = {"PERSON": "person names need a NER model (spaCy, transformers) that cannot be fetched offline"}

# Every entity above has a digit, an '@' or a ':' in it: a text without any is returned as is
# (most texts of a review or ticket stream), without running a recogniser.
_CANDIDATE = re.compile(r"[\d@:]")
# scheme://user:password@host...: the whole URL is masked (its host may name the person too).
# Presidio's e-mail pattern backtracks quadratically ("a.a.a.…" takes seconds at 10,000
# characters): this one bounds the local part (64 characters, RFC 5321) and each domain label.
_EMAIL = r"\b[\w!#$%&'*+\-/=?^`{|}~.]{1,64}@\w{1,63}(?:-{1,8}\w{1,63}){0,8}(?:\.\w{1,63}(?:-{1,8}\w{1,63}){0,8}){1,8}\b"
_URL_WITH_CREDENTIALS = r"\b[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/@]{1,256}:[^\s/@]{1,256}@[^\s/?#]{1,256}[^\s]{0,2048}"


def checked_entities(entities: Iterable[str]) -> tuple[str, ...]:
    """``entities`` deduplicated in order, or a :class:`ConfigError` naming the valid ones."""
    names = tuple(dict.fromkeys(e.strip().upper() for e in entities if e.strip()))
    for name in names:
        if name in UNAVAILABLE:
            raise ConfigError(f"STREAMCL_PII_ENTITIES: {name} is not available: {UNAVAILABLE[name]}")
        if name not in ENTITIES:
            raise ConfigError(f"STREAMCL_PII_ENTITIES: unknown entity {name!r}; valid: {', '.join(ENTITIES)}")
    if not names:
        raise ConfigError(f"STREAMCL_PII_ENTITIES is empty; valid: {', '.join(ENTITIES)}")
    return names


def _recognisers(entities: Sequence[str]) -> list[Any]:
    """Presidio's recognisers for ``entities``, all pattern-based (no NLP model)."""
    import tldextract
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
    )

    # Presidio's e-mail check asks tldextract for the public suffix list, which it fetches over
    # the network by default: this one reads the snapshot the package ships, and writes no cache.
    suffixes = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(patterns=[Pattern("email (bounded)", _EMAIL, 0.5)])

        def validate_result(self, pattern_text: str) -> bool:
            return bool(suffixes(pattern_text.rpartition("@")[2]).fqdn)

    url = PatternRecognizer(
        supported_entity="URL_WITH_CREDENTIALS",
        patterns=[Pattern("url with user:password@", _URL_WITH_CREDENTIALS, 1.0)],
    )
    make: dict[str, Callable[[], Any]] = {
        "EMAIL_ADDRESS": OfflineEmailRecognizer,
        "PHONE_NUMBER": PhoneRecognizer,
        "CREDIT_CARD": CreditCardRecognizer,
        "IBAN_CODE": IbanRecognizer,
        "IP_ADDRESS": IpRecognizer,
        "URL_WITH_CREDENTIALS": lambda: url,
    }
    return [make[e]() for e in entities]


class Masker:
    """Replaces the personal data of ``entities`` in a text with ``<ENTITY>``; deterministic.

    >>> Masker(["EMAIL_ADDRESS", "CREDIT_CARD"]).mask("mail a.b@example.com, card 4111 1111 1111 1111")
    'mail <EMAIL_ADDRESS>, card <CREDIT_CARD>'
    """

    def __init__(self, entities: Iterable[str] = ENTITIES) -> None:
        self.entities = checked_entities(entities)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recogniser in _recognisers(self.entities):
            registry.add_recognizer(recogniser)
        self._analyzer = AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])
        self._anonymizer = AnonymizerEngine()
        self._operators = {e: OperatorConfig("replace", {"new_value": f"<{e}>"}) for e in self.entities}
        self._wanted = list(self.entities)

    def mask(self, text: str) -> str:
        """``text`` with every span found replaced by ``<ENTITY>``."""
        if not _CANDIDATE.search(text):
            return text
        found = self._analyzer.analyze(text, language="en", entities=self._wanted)
        if not found:
            return text
        found_: Any = found  # the analyzer's results, which the anonymizer's stubs type as its own class
        return str(self._anonymizer.anonymize(text=text, analyzer_results=found_, operators=self._operators).text)

    def mask_many(self, texts: Iterable[str]) -> list[str]:
        """:meth:`mask` of each text, in order."""
        return [self.mask(t) for t in texts]


def masker_for(settings: Any) -> Masker | None:
    """The Masker ``settings`` ask for (``pii``, ``pii_entities`` of StreamSettings), or None
    with masking off: the caller skips masking entirely then."""
    if getattr(settings, "pii", "off") != "mask":
        return None
    return Masker(settings.pii_entities)
