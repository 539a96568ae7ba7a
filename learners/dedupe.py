"""The ids a learner's lineage already took (trained, held out or skipped by the backlog
policy), so an example read again (a joiner restarted, feedback sent twice) is not trained twice.

A bounded first-in-first-out window of 64-bit hashes (BLAKE2b) of the ids: ``capacity`` ids,
8 bytes each on disk. It is saved into every version (:data:`DEDUPE_FILE`, covered by the
version's checksums), so a learner resuming from version V knows exactly the ids the lineage
up to V took. An id older than the window is taken again; two different ids share a hash with
a probability of about n²/2⁶⁵ (1e-8 for a million ids), and the second is then refused.

Erased ids (learners/erasure.py) are taken too, and besides kept by name in :data:`ERASED_FILE`
(the newest ``max(capacity, MIN_ERASED)`` of them), so a record of one still unread in the
labeled topic, or read again after its hash left the window, is never trained again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learners.registry import Registry, VersionMeta

__all__ = ["DEDUPE_FILE", "ERASED_FILE", "MAGIC", "MIN_ERASED", "TAKEN", "SeenIds", "id_hash", "seen_at"]

log = logging.getLogger(__name__)

#: A version's window of taken ids: :data:`MAGIC`, then little-endian uint64 hashes, oldest first.
DEDUPE_FILE = "dedupe.bin"
MAGIC = b"SCLIDS1\n"
#: A version's erased ids (a JSON list, oldest first), written once any id was erased.
ERASED_FILE = "erased.json"
#: Fewest erased ids remembered, whatever the window (``capacity`` 0 included).
MIN_ERASED = 100_000
#: The lineage lists whose ids count as taken (``skipped`` holds record positions, not ids).
TAKEN = ("trained", "held_out", "backlog_skipped")


def id_hash(id_: str) -> int:
    """The 64-bit hash an id is remembered by."""
    digest = hashlib.blake2b(id_.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class SeenIds:
    """The newest ``capacity`` ids taken, oldest evicted first (``capacity`` 0: remembers none)."""

    def __init__(self, capacity: int, hashes: Iterable[int] = ()) -> None:
        self.capacity = capacity
        self._order: deque[int] = deque()
        self._set: set[int] = set()
        self._add_hashes(hashes)
        self.erased: dict[str, None] = {}  # insertion-ordered: the oldest leave first

    def erase(self, ids: Iterable[str]) -> None:
        """Remember ``ids`` as erased (and taken): :meth:`is_erased` holds for them from now on."""
        ids = list(ids)
        self.add(ids)
        for id_ in ids:
            self.erased.pop(id_, None)
            self.erased[id_] = None
        for old in list(self.erased)[: max(0, len(self.erased) - max(self.capacity, MIN_ERASED))]:
            del self.erased[old]

    def is_erased(self, id_: str) -> bool:
        """Whether an operator erased ``id_`` (it is never taken again)."""
        return id_ in self.erased

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, str) and id_hash(id_) in self._set

    def add(self, ids: Iterable[str]) -> None:
        """Remember ``ids`` as taken (the oldest leave once the window is full)."""
        self._add_hashes(id_hash(i) for i in ids)

    def _add_hashes(self, hashes: Iterable[int]) -> None:
        if self.capacity <= 0:
            return
        order, members = self._order, self._set
        for h in hashes:
            if h in members:
                continue
            order.append(h)
            members.add(h)
            if len(order) > self.capacity:
                members.discard(order.popleft())

    def first_seen(self, ids: Sequence[str]) -> list[bool]:
        """For each of ``ids``: True when it is neither in the window nor earlier in ``ids``
        (the first of an id wins). Remembers nothing: :meth:`add` what was taken."""
        batch: set[int] = set()
        out = []
        for id_ in ids:
            h = id_hash(id_)
            out.append(h not in self._set and h not in batch)
            batch.add(h)
        return out

    def clear(self) -> None:
        """Forget the taken ids (a new broker's stream starts over); the erased ones stay."""
        self._order.clear()
        self._set.clear()

    # the file -----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        hashes = array("Q", self._order)
        if sys.byteorder == "big":
            hashes.byteswap()
        return MAGIC + hashes.tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes, capacity: int) -> SeenIds:
        """A window read from :meth:`to_bytes` (its newest ``capacity`` ids); ValueError when
        ``raw`` is not one."""
        if not raw.startswith(MAGIC) or (len(raw) - len(MAGIC)) % 8:
            raise ValueError(f"not a {DEDUPE_FILE} file ({len(raw)} bytes)")
        hashes = array("Q")
        hashes.frombytes(raw[len(MAGIC) :])
        if sys.byteorder == "big":
            hashes.byteswap()
        return cls(capacity, hashes[max(0, len(hashes) - capacity) :] if capacity > 0 else ())

    def save(self, folder: Path) -> None:
        (folder / DEDUPE_FILE).write_bytes(self.to_bytes())
        if self.erased:
            (folder / ERASED_FILE).write_text(json.dumps(list(self.erased), ensure_ascii=False), encoding="utf-8")

    def load_erased(self, folder: Path) -> SeenIds:
        """Add the erased ids of a version folder's :data:`ERASED_FILE` (none without one)."""
        path = folder / ERASED_FILE
        if path.is_file():
            self.erase(str(i) for i in json.loads(path.read_text(encoding="utf-8")))
        return self


def seen_at(registry: Registry, meta: VersionMeta, folder: Path, capacity: int) -> SeenIds:
    """The window of ids the lineage up to ``meta`` took: its :data:`DEDUPE_FILE`, else (a
    version written before there was one) rebuilt from the ``lineage.json`` of it and its
    ancestors, newest back, until ``capacity`` ids are known."""
    path = folder / DEDUPE_FILE
    if path.is_file():
        return SeenIds.from_bytes(path.read_bytes(), capacity).load_erased(folder)
    if meta.parent is None and not meta.consumed:
        return SeenIds(capacity).load_erased(folder)  # the start-up version: nothing taken yet
    chunks: list[list[str]] = []
    known = 0
    version: int | None = meta.version
    while version is not None and known < capacity:
        lineage = registry.lineage(version) or {}
        ids = [i for kind in TAKEN for i in lineage.get(kind, [])]
        chunks.append(ids)
        known += len(ids)
        version = registry.meta(version).parent
    log.warning(
        "version %d has no %s: the window of taken ids is rebuilt from the lineage (%d ids)",
        meta.version,
        DEDUPE_FILE,
        known,
    )
    seen = SeenIds(capacity)
    for ids in reversed(chunks):
        seen.add(ids)
    return seen.load_erased(folder)
