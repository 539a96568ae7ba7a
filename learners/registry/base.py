"""The registry interface every backend implements, and what backends share.

A version folder (a prefix on S3) holds the model files, ``meta.json`` (:class:`VersionMeta`:
version, parent, status, consumed offsets, metrics, file checksums) and ``lineage.json``. A
version appears whole or not at all. Weights of old versions are pruned by
:meth:`Registry.prune`; ``meta.json`` and ``lineage.json`` stay, so the lineage is never lost.
A small version's weights are a delta of a full version its metadata names (``base``), which
pruning keeps while a retained version refers to it (learners/registry/_bases.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from learners.registry._bases import check_base, referenced
from learners.registry._lease import LEASE_FILE, Lease, LeaseError, renewed, taken
from learners.registry._meta import NewVersion, ServingState, VersionMeta, WriteFiles
from learners.registry._names import check_names, version_folder
from learners.registry._pointer import (
    SERVING_BACKUP,
    PointerRead,
    Problem,
    decode_pointer,
    ever_served,
    rebuild_pointer,
)
from learners.registry._signing import Signer
from streaming.errors import RegistryError

if TYPE_CHECKING:
    from learners.model import TextClassifier

log = logging.getLogger(__name__)
_Record = TypeVar("_Record", bound=BaseModel)

META_FILE = "meta.json"
#: Which examples a version consumed since its parent (ids trained, held out, skipped): small,
#: and kept when a pruned version's weights are deleted, so the lineage stays auditable.
LINEAGE_FILE = "lineage.json"
SERVING_FILE = "serving.json"
COUNTER_FILE = "registry.json"
#: The audit trail of operators' actions in a local registry's root (on S3: one object per record
#: under :data:`AUDIT_PREFIX`, since S3 cannot append).
AUDIT_FILE = "audit.jsonl"
AUDIT_PREFIX = "audit"
HISTORY = 50  # earlier serving versions remembered for rollback
#: Files of a version that pruning and dropping never delete.
KEPT_FILES = frozenset({META_FILE, LINEAGE_FILE})


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Registry(ABC):
    """Where versions live. One small interface; a backend is a new file."""

    uri: str
    _pointer_warned: str | None = None  # the last pointer problem logged, so a poller logs it once
    #: Versions whose ``meta.json`` could not be read at the last :meth:`versions` listing (they
    #: are left out of it); exported by the controller, logged once per version.
    unreadable: frozenset[int] = frozenset()
    #: Signs the versions written and checks every version read (None: versions are not signed).
    _signer: Signer | None = None

    # what a backend implements ----------------------------------------------------------------
    @abstractmethod
    def create(self, write_files: WriteFiles, new: NewVersion) -> VersionMeta:
        """Write a new version: ``write_files(folder)`` fills it (and may return ``new`` completed
        with what only the written files tell); returns the stored metadata."""

    @abstractmethod
    def versions(self) -> list[VersionMeta]:
        """Metadata of every version, oldest first (a version with corrupt metadata is left out)."""

    def _listed(self, found: list[VersionMeta], unreadable: dict[int, str]) -> list[VersionMeta]:
        """Finish a :meth:`versions` listing: remember (and log once) the unreadable versions."""
        for version in sorted(set(unreadable) - self.unreadable):
            why = unreadable[version]
            log.error("%s: version %d is left out: its metadata cannot be read (%s)", self.uri, version, why)
        self.unreadable = frozenset(unreadable)
        return found

    @abstractmethod
    def meta(self, version: int) -> VersionMeta:
        """Metadata of one version (RegistryError if unknown or corrupt)."""

    @abstractmethod
    def update(self, version: int, **changes: Any) -> VersionMeta:
        """Change fields of a version's metadata (status, reason, gate…); returns the new metadata."""

    @abstractmethod
    def local_path(self, version: int) -> Path:
        """A local folder with the version's files, checksums verified."""

    @abstractmethod
    def lineage(self, version: int) -> dict[str, Any] | None:
        """The version's :data:`LINEAGE_FILE` (also after pruning), or None without one."""

    @abstractmethod
    def _read_pointer(self, name: str) -> bytes | None:
        """The bytes of a pointer file in the registry's root (``serving.json``…), None if absent."""

    @abstractmethod
    def _write_pointer(self, name: str, payload: dict[str, Any]) -> None:
        """Replace a pointer file in the registry's root as a whole (never half written)."""

    @abstractmethod
    def _delete_files(self, version: int, names: list[str] | None) -> None:
        """Delete the named files of a version (None: every file but :data:`KEPT_FILES`), in
        storage and in any local copy. Its metadata is updated before."""

    @abstractmethod
    def append_audit(self, record: dict[str, Any]) -> None:
        """Append one record (a JSON object) to the registry's audit trail: append-only, durable
        when this returns, never rewritten; RegistryError when it cannot be written."""

    @abstractmethod
    def _audit_lines(self) -> list[bytes]:
        """The stored audit records, one JSON document each, in the order they were written."""

    def read_audit(self) -> list[dict[str, Any]]:
        """Every record of the audit trail in the order written; one that is not a JSON object
        (a torn or foreign line) is skipped."""
        out = []
        for line in self._audit_lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def _trusted(self, meta: VersionMeta, version: int) -> VersionMeta:
        """``meta`` as read from version ``version``'s folder, when it says it is that version and,
        with a signing key, carries a matching signature; else RegistryError (every read of a
        version's metadata passes here, so a refused version is never loaded or resumed from)."""
        if meta.version != version:
            raise RegistryError(f"version {version}: its metadata says version {meta.version}: refused", version)
        return self._signer.verify(meta) if self._signer is not None else meta

    def _sealed(self, meta: VersionMeta) -> VersionMeta:
        """``meta`` signed, when the registry has a key (after every change that writes metadata)."""
        return self._signer.seal(meta) if self._signer is not None else meta

    def _exclusive(self) -> AbstractContextManager[object]:
        """Held around a read-modify-write of metadata or the pointer (a backend whose writes
        are not compare-and-swap locks across processes here)."""
        return contextlib.nullcontext()

    # the serving pointer ------------------------------------------------------------------------
    def read_serving(self) -> PointerRead:
        """The serving pointer and what was wrong with it: a corrupt one, or one missing once
        something was served, is recovered from its copy, else rebuilt from the versions
        (:func:`~learners.registry._pointer.rebuild_pointer`). Nothing is written here."""
        raw = self._read_pointer(SERVING_FILE)
        state = self._decode_serving(raw)
        if state is not None:
            return PointerRead(state)
        backup = self._decode_serving(self._read_pointer(SERVING_BACKUP))
        problem: Problem = "corrupt" if raw is not None else "missing"
        if backup is not None:
            return PointerRead(backup, problem, "backup", f"{SERVING_FILE} {problem}; its copy serves {backup.version}")
        versions = self.versions()
        if raw is None and not ever_served(versions):
            return PointerRead(ServingState(), source="none")  # never written: nothing serving yet
        state = rebuild_pointer(versions, HISTORY)
        detail = f"{SERVING_FILE} {problem}, no usable copy; rebuilt: serving {state.version}, floor {state.floor}"
        return PointerRead(state, problem, "versions", detail)

    def serving_state(self) -> ServingState:
        """The serving pointer (nothing serving: ``ServingState()``), recovered when it is
        corrupt or lost (logged once; the controller repairs it and counts it)."""
        read = self.read_serving()
        if read.problem is not None and read.detail != self._pointer_warned:
            log.warning("%s: the serving pointer is %s: %s", self.uri, read.problem, read.detail)
        self._pointer_warned = read.detail or None
        return read.state

    def repair_serving(self) -> PointerRead:
        """Write back a recovered pointer; returns what was read (``problem`` None: nothing to do)."""
        with self._exclusive():
            read = self.read_serving()
            if read.problem is not None and read.state.version is not None:
                self._change_serving(lambda current: current)  # the recovered state, written back
            return read

    def _change_serving(self, change: Callable[[ServingState], ServingState]) -> ServingState:
        """Write ``change(the serving state)`` as one step against other writers (a backend
        with conditional writes overrides this with a compare-and-swap). The copy is written
        first: a crash in between leaves the older pointer whole in ``serving.json``."""
        with self._exclusive():
            state = change(self.serving_state())
            self._write_pointer(SERVING_BACKUP, self._pointer_body(state))
            self._write_pointer(SERVING_FILE, self._pointer_body(state))
            return state

    def _pointer_body(self, state: ServingState) -> dict[str, Any]:
        """``state`` as stored: signed when the registry has a key (a stale signature replaced)."""
        body = {k: v for k, v in state.to_json().items() if k != "signature"}
        if self._signer is not None:
            body["signature"] = self._signer.sign_record(body)
        return body

    def _decode_serving(self, raw: bytes | None) -> ServingState | None:
        """A stored pointer, None when it is not one or, with a key, not correctly signed (then it
        is recovered like a corrupt one: from its copy, else rebuilt from the signed versions)."""
        state = decode_pointer(raw)
        if state is None or self._signer is None or self._signer.matches(state.to_json()):
            return state
        return None

    def _lineage_of(self, version: int, raw: bytes) -> dict[str, Any]:
        """A version's lineage as read from storage, when it matches the checksum its (signed)
        metadata lists for it; RegistryError otherwise."""
        digest = self.meta(version).files.get(LINEAGE_FILE)
        if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
            raise RegistryError(f"version {version}: {LINEAGE_FILE} does not match its checksum: refused", version)
        try:
            return dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"version {version}: unreadable {LINEAGE_FILE}: {exc}", version) from None

    def _swap_pointer(self, name: str, change: Callable[[bytes | None], _Record]) -> _Record:
        """Replace a pointer file with ``change(its bytes)`` as one step against other writers
        (a backend with conditional writes overrides this with a compare-and-swap)."""
        with self._exclusive():
            record = change(self._read_pointer(name))
            self._write_pointer(name, record.model_dump())
            return record

    # the learner's lease ------------------------------------------------------------------------
    def acquire_lease(self, owner: str, ttl_s: float, now: float | None = None) -> Lease:
        """Become the one writer of versions for ``ttl_s`` seconds (:class:`LeaseError` while
        another owner's lease is live)."""
        at = time.time() if now is None else now
        return self._swap_pointer(LEASE_FILE, lambda raw: taken(raw, owner, ttl_s, at))

    def renew_lease(self, lease: Lease, ttl_s: float, now: float | None = None) -> Lease:
        """Extend ``lease``; :class:`LeaseError` when another owner took it over."""
        at = time.time() if now is None else now
        return self._swap_pointer(LEASE_FILE, lambda raw: renewed(raw, lease, ttl_s, at))

    def release_lease(self, lease: Lease) -> None:
        """End ``lease`` now, so the next learner need not wait for it to expire (a lost one: nothing)."""
        try:
            self.renew_lease(lease, 0.0)
        except LeaseError:
            pass

    # shared behaviour -------------------------------------------------------------------------
    def load_model(self, version: int) -> TextClassifier:
        """The version's model, ready for inference (a ``TextClassifier`` in eval mode, sharing
        its base's tensors with the other models of this process: never train it); RegistryError
        when its files, or its base's, are missing or corrupt."""
        from learners.model import TextClassifier  # torch only where a model is loaded

        return TextClassifier.load(self.local_path(version), share_base=True).eval()

    def _loadable(self, version: int) -> VersionMeta:
        """The metadata of a version whose files can be read: not pruned, and with its base
        there and matching when it is a delta (learners/registry/_bases.py); else RegistryError."""
        meta = self.meta(version)
        if meta.pruned:
            raise RegistryError(f"the files of version {version} were pruned", version)
        check_base(self, meta)
        return meta

    def serving(self) -> int | None:
        """The version the endpoint must serve, or None."""
        return self.serving_state().version

    def set_serving(self, version: int, pinned: bool | None = None, floor: int | None = None) -> ServingState:
        """Point the endpoint at ``version`` (which must exist); the previous one joins the
        history. ``pinned``/``floor`` change those fields when given (the floor never drops)."""
        self.meta(version)  # must exist

        def point(state: ServingState) -> ServingState:
            history = [v for v in state.history if v != version]
            if state.version is not None and state.version != version:
                history.append(state.version)
            changes: dict[str, Any] = {"version": version, "ts": time.time(), "history": history[-HISTORY:]}
            if pinned is not None:
                changes["pinned"] = pinned
            if floor is not None:
                changes["floor"] = max(floor, state.floor)
            return state.model_copy(update=changes)

        return self._change_serving(point)

    def set_pinned(self, pinned: bool) -> ServingState:
        """Pin (or unpin) the serving version: a pinned one is not replaced automatically."""

        def pin(state: ServingState) -> ServingState:
            if state.version is None:
                raise RegistryError("nothing is serving yet")
            return state.model_copy(update={"pinned": pinned})

        return self._change_serving(pin)

    def latest(self) -> VersionMeta | None:
        """Newest version whose files are still there."""
        for meta in reversed(self.versions()):
            if not meta.pruned:
                return meta
        return None

    def prune(self, keep_last: int, keep: set[int]) -> list[int]:
        """Delete the files (not ``meta.json``/``lineage.json``) of all but the ``keep_last``
        newest unpruned versions, those in ``keep`` and the bases of the versions kept; returns
        the pruned ones."""
        live = [m for m in self.versions() if not m.pruned]
        doomed = [m for m in live[: max(0, len(live) - keep_last)] if m.version not in keep]
        gone = {m.version for m in doomed}
        bases = referenced(m for m in live if m.version not in gone)
        pruned = []
        for meta in doomed:
            if meta.version in bases:
                continue
            # metadata first: a reader then sees "pruned", and a crash leaves unreferenced files only
            self.update(meta.version, pruned=True, files={})
            self._delete_files(meta.version, None)
            pruned.append(meta.version)
        return pruned

    def drop_files(self, version: int, names: list[str]) -> VersionMeta:
        """Delete some files of a version (the learner's state of an older checkpoint); the
        version stays loadable with the files it keeps. Returns the updated metadata."""
        names = check_names(names, version)  # from the caller's metadata: plain names only
        with self._exclusive():  # the read of the metadata and its update as one step
            meta = self.meta(version)
            gone = [n for n in names if n in meta.files and n not in KEPT_FILES]
            files = {k: v for k, v in meta.files.items() if k not in gone}
            # metadata first: a reader never checks a file that is about to go
            meta = self.update(version, files=files, dropped=sorted({*meta.dropped, *gone}))
        self._delete_files(version, gone)
        return meta

    @staticmethod
    def _completed(written: object, new: NewVersion) -> NewVersion:
        """The metadata a :data:`WriteFiles` returned, else the one it was given."""
        return written if isinstance(written, NewVersion) else new

    def _full_meta(self, version: int, new: NewVersion, files: dict[str, str]) -> VersionMeta:
        """A new version's stored metadata: ``new`` with its number, URI, creation time and file
        checksums (status ``candidate`` unless ``new`` says otherwise)."""
        fields = {"status": new.status, "created": time.time(), **new.to_json()}
        try:
            meta = VersionMeta.model_validate(
                {**fields, "version": version, "uri": self.version_uri(version), "files": files}
            )
        except ValidationError as exc:  # a file name that is not a plain name, too many files…
            raise RegistryError(f"version {version}: refused: {exc.errors()[0].get('msg')}", version) from None
        return self._sealed(meta)

    def version_uri(self, version: int) -> str:
        return f"{self.uri.rstrip('/')}/versions/{version_folder(version)}"


__all__ = [
    "AUDIT_FILE",
    "AUDIT_PREFIX",
    "COUNTER_FILE",
    "HISTORY",
    "KEPT_FILES",
    "LINEAGE_FILE",
    "META_FILE",
    "SERVING_BACKUP",
    "SERVING_FILE",
    "Registry",
    "sha256",
]
