"""The one root error of streamcl and the errors that carry data a handler acts on."""

from __future__ import annotations


class StreamclError(Exception):
    """Root of every error streamcl raises on purpose."""


class InvalidEvent(StreamclError):
    """A message that cannot become an event; ``reason`` is the DLQ reason label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(StreamclError):
    """The Kafka broker could not be started, reached or used."""

    def __init__(self, message: str, bootstrap: str | None = None) -> None:
        super().__init__(message)
        self.bootstrap = bootstrap


class RegistryError(StreamclError):
    """A model version is missing, corrupt or cannot be written."""

    def __init__(self, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


class ConfigError(StreamclError):
    """Settings that cannot work together."""
