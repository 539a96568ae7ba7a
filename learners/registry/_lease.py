"""The learner's lease: one writer of versions per registry.

A lease names its owner, an epoch that grows with every new owner, and when it expires. A
learner takes it at start (refused while another owner's lease is live), renews it as it runs,
and checks it before writing a version, so a second or zombie learner is fenced: it cannot
start, and one whose lease was taken over writes nothing more.
"""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import BaseModel, ConfigDict, ValidationError

from streaming.errors import RegistryError

__all__ = ["LEASE_FILE", "PROCESS_OWNER", "Lease", "LeaseError", "renewed", "taken"]

LEASE_FILE = "learner.lease.json"
#: This process as a lease owner: a learner rebuilt in the same process keeps its lease.
PROCESS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease(BaseModel):
    """``learner.lease.json``: who writes versions, since which take-over, until when (Unix s)."""

    model_config = ConfigDict(frozen=True)

    owner: str
    epoch: int
    expires: float


class LeaseError(RegistryError):
    """Another learner holds the lease (at start) or took it over (while running)."""

    def __init__(self, message: str, owner: str, expires: float) -> None:
        super().__init__(message)
        self.owner, self.expires = owner, expires


def _decode(raw: bytes | None) -> Lease | None:
    if raw is None:
        return None
    try:
        return Lease.model_validate_json(raw)
    except ValidationError:
        return None  # an unreadable lease fences nobody; the next owner rewrites it


def taken(raw: bytes | None, owner: str, ttl_s: float, now: float) -> Lease:
    """The lease ``owner`` holds after taking it over ``raw``; LeaseError while another owner's is live."""
    held = _decode(raw)
    if held is not None and held.owner != owner and held.expires > now:
        raise LeaseError(
            f"another learner ({held.owner}) writes this registry's versions; its lease expires in "
            f"{held.expires - now:.0f} s unless it renews it: stop it, or wait",
            held.owner,
            held.expires,
        )
    epoch = held.epoch if held is not None and held.owner == owner else (held.epoch + 1 if held else 1)
    return Lease(owner=owner, epoch=epoch, expires=now + ttl_s)


def renewed(raw: bytes | None, lease: Lease, ttl_s: float, now: float) -> Lease:
    """``lease`` extended by ``ttl_s``; LeaseError when another owner took it over since."""
    held = _decode(raw)
    if held is not None and (held.owner != lease.owner or held.epoch != lease.epoch):
        raise LeaseError(
            f"this learner ({lease.owner}) lost its lease to {held.owner}: it writes no more versions",
            held.owner,
            held.expires,
        )
    return lease.model_copy(update={"expires": now + ttl_s})
