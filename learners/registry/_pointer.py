"""Reading the serving pointer with recovery.

``serving.json`` is written with a copy beside it (:data:`SERVING_BACKUP`). A pointer that is
corrupt, or missing once something was served, is recovered from that copy, else rebuilt from
the versions' statuses with the floor at the newest version, so nothing stored is ever promoted
automatically from a lost pointer: only candidates written afterwards go through the gate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from learners.registry._meta import ServingState, VersionMeta

__all__ = ["SERVING_BACKUP", "PointerRead", "Problem", "Source", "decode_pointer", "ever_served", "rebuild_pointer"]

#: The copy of ``serving.json``, written before it with the same content.
SERVING_BACKUP = "serving.prev.json"

Problem = Literal["missing", "corrupt"]
Source = Literal["pointer", "backup", "versions", "none"]


@dataclass(frozen=True)
class PointerRead:
    """The serving state, and what was wrong with ``serving.json`` (None: nothing) and where the
    state came from instead."""

    state: ServingState
    problem: Problem | None = None
    source: Source = "pointer"
    detail: str = ""


def decode_pointer(raw: bytes | None) -> ServingState | None:
    """A stored pointer, or None when it is not one (unparseable, invalid, or naming no version)."""
    if raw is None:
        return None
    try:
        state = ServingState.model_validate_json(raw)
    except ValidationError:
        return None
    return state if state.version is not None else None


def ever_served(versions: list[VersionMeta]) -> bool:
    """Whether a pointer must have existed: a learner wrote a version (it has a parent, and
    learners start only once something serves) or one beyond the first was promoted or rolled
    back. A fresh registry holds the start-up version alone."""
    return any(m.parent is not None for m in versions) or any(
        m.status in ("promoted", "rolled_back") for m in versions[1:]
    )


def rebuild_pointer(versions: list[VersionMeta], history_size: int) -> ServingState:
    """A pointer rebuilt from the versions alone: the newest promoted version (one with files
    first), the promoted and rolled-back ones as history, unpinned, and the floor at the newest
    version, so no stored candidate is promoted without an operator."""
    if not versions:
        return ServingState()
    promoted = [m for m in versions if m.status == "promoted"]
    chosen = ([m for m in promoted if not m.pruned] or promoted or versions[:1])[-1].version
    history = [m.version for m in versions if m.status in ("promoted", "rolled_back") and m.version != chosen]
    return ServingState(version=chosen, history=history[-history_size:], floor=versions[-1].version, ts=time.time())
