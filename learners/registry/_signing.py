"""Optional signing of versions: an HMAC-SHA256 over the version's whole ``meta.json`` (as canonical
JSON, its ``signature`` left out), stored as ``signature`` in it; the serving pointer is signed
the same way.

Checksums beside the files prove integrity, not origin: whoever can write the bucket can write
both. With ``STREAMCL_REGISTRY_SIGNING_KEY`` set, the writer signs every version it stores and
every reader (replicas, the gate and controller, the learner resuming) refuses a version that
is unsigned or wrongly signed. The key never appears in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from streaming._secrets import MIN_SECRET_CHARS, check_secret
from streaming.errors import RegistryError

if TYPE_CHECKING:
    from learners.registry._meta import VersionMeta

__all__ = ["KEY_ENV", "MIN_KEY_CHARS", "PREFIX", "Signer", "SigningSettings", "canonical", "manifest", "signer_for"]

KEY_ENV = "STREAMCL_REGISTRY_SIGNING_KEY"
#: Shortest key accepted: a shorter (or empty) one refuses to start.
MIN_KEY_CHARS = MIN_SECRET_CHARS
PREFIX = "hmac-sha256:"


def canonical(body: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces, ASCII) of ``body`` without its ``signature``."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest(meta: VersionMeta) -> bytes:
    """The signed bytes: the whole ``meta.json`` but its signature, so everything a reader trusts
    is covered: its number (a copy of a signed ``meta.json`` into another version is refused),
    model, parent and file checksums, and also offsets, status, pruned, dropped, state files,
    metrics and the gate's figures."""
    return canonical(meta.to_json())


def _key_text(key: SecretStr | str) -> str:
    """The key's text when it is long and random-looking enough (streaming/_secrets.py); else ValueError."""
    text = key.get_secret_value() if isinstance(key, SecretStr) else key
    check_secret(KEY_ENV, text, MIN_KEY_CHARS)
    return text


class Signer:
    """Signs and checks versions' metadata with one key."""

    def __init__(self, key: SecretStr | str) -> None:
        try:
            self._key = _key_text(key).encode()
        except ValueError as exc:
            raise RegistryError(str(exc)) from None

    def sign(self, meta: VersionMeta) -> str:
        """The signature of ``meta``'s manifest."""
        return self.sign_record(meta.to_json())

    def sign_record(self, body: dict[str, Any]) -> str:
        """The signature of a JSON object (its ``signature`` key left out): a version's metadata
        or the serving pointer."""
        return PREFIX + hmac.new(self._key, canonical(body), hashlib.sha256).hexdigest()

    def matches(self, body: dict[str, Any]) -> bool:
        """Whether ``body`` carries its own signature (constant-time compare)."""
        given = body.get("signature")
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.sign_record(body).encode())

    def seal(self, meta: VersionMeta) -> VersionMeta:
        """``meta`` with its signature (written after every change of its manifest)."""
        return meta.changed(signature=self.sign(meta))

    def verify(self, meta: VersionMeta) -> VersionMeta:
        """``meta`` when its signature matches; else RegistryError saying why."""
        if not meta.signature:
            raise RegistryError(f"version {meta.version} is not signed ({KEY_ENV} is set): refused", meta.version)
        if not self.matches(meta.to_json()):
            raise RegistryError(f"version {meta.version} has a wrong signature: refused", meta.version)
        return meta


def signer_for(key: SecretStr | str | None) -> Signer | None:
    """A signer for ``key``, None without one (versions are neither signed nor checked)."""
    return Signer(key) if key is not None else None


class SigningSettings(BaseModel):
    """The registry's signing key, as a settings field (``STREAMCL_REGISTRY_SIGNING_KEY``)."""

    registry_signing_key: SecretStr | None = Field(
        None,
        description=f"secret (at least {MIN_KEY_CHARS} characters) that signs every version the learner writes "
        "(HMAC-SHA256 over its metadata and checksums); replicas, the gate and the learner then refuse "
        "unsigned or wrongly signed versions; unset: versions are not signed",
    )

    @field_validator("registry_signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _key_text(value)
        return value
