"""Checks every secret setting passes at start-up (API tokens, the registry's signing key): one
rule for all, so a placeholder copied from an example is refused wherever it is pasted."""

from __future__ import annotations

__all__ = ["MIN_SECRET_CHARS", "PLACEHOLDERS", "check_secret"]

#: Shortest secret accepted: a shorter one is guessable.
MIN_SECRET_CHARS = 32
#: Parts of a secret that say it was never replaced by a random one (``change-me``...).
PLACEHOLDERS = ("change", "replace", "example", "placeholder", "your", "dummy", "todo", "xxxx", "insert", "default")
HINT = 'try: python -c "import secrets; print(secrets.token_urlsafe(48))"'


def check_secret(setting: str, value: str, min_chars: int = MIN_SECRET_CHARS) -> None:
    """Raise ``ValueError`` naming ``setting`` (never the value) when ``value`` is empty or blank,
    shorter than ``min_chars``, or looks like a placeholder (a known word, few distinct characters,
    or spaces around it)."""
    if not value.strip():
        raise ValueError(f"{setting} is empty: set a random secret of at least {min_chars} characters or unset it")
    if len(value) < min_chars:
        raise ValueError(f"{setting} must be at least {min_chars} characters, value not shown ({HINT})")
    lowered = value.lower()
    if any(p in lowered for p in PLACEHOLDERS) or len(set(value)) < 8 or value != value.strip():
        raise ValueError(f"{setting} looks like a placeholder, not a random secret ({HINT})")
