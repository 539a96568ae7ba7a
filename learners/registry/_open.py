"""Opening a registry by URI, and the registry a model's settings name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from learners.registry.base import Registry
from streaming.errors import RegistryError

if TYPE_CHECKING:
    from learners.settings import LearnerSettings
    from streaming.settings import StreamSettings

__all__ = ["open_registry", "registry_for"]


def open_registry(
    uri: str | Path, cache_dir: str | Path | None = None, signing_key: SecretStr | str | None = None
) -> Registry:
    """A registry for ``uri``: a local path, a ``file://`` URI or ``s3://bucket/prefix`` (S3 or an
    S3-compatible store; ``cache_dir`` holds the downloaded versions). With ``signing_key``, the
    versions written are signed and only correctly signed versions are read."""
    from learners.registry.local import LocalRegistry

    text = str(uri)
    if text.startswith("file://"):
        return LocalRegistry(text[len("file://") :], signing_key)
    if text.startswith("s3://"):
        from learners.registry.s3 import S3Registry  # boto3 is imported only when used

        bucket, _, prefix = text[len("s3://") :].partition("/")
        return S3Registry(bucket, prefix, cache_dir=cache_dir, signing_key=signing_key)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise RegistryError(f"unsupported registry URI scheme {scheme!r} (supported: a local path, file://, s3://)")
    return LocalRegistry(text, signing_key)


def registry_for(stream: StreamSettings, learner: LearnerSettings) -> Registry:
    """The registry of a model: its ``registry_uri``, else ``<state_dir>/registry``, signed with
    ``registry_signing_key`` (:class:`~learners.registry._signing.SigningSettings`) when set."""
    return open_registry(
        learner.registry_uri or stream.state_dir / "registry",
        cache_dir=stream.state_dir / "registry-cache",
        signing_key=learner.registry_signing_key,
    )
