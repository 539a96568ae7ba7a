"""The registry interface every backend implements, and what backends share.

A version folder (a prefix on S3) holds the model files, ``meta.json`` (:class:`VersionMeta`:
version, parent, status, consumed offsets, metrics, file checksums) and ``lineage.json``. A
version appears whole or not at all. Weights of old versions are pruned by
:meth:`Registry.prune`; ``meta.json`` and ``lineage.json`` stay, so the lineage is never lost.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learners.registry._meta import NewVersion, ServingState, VersionMeta, WriteFiles
from streaming.errors import RegistryError

if TYPE_CHECKING:
    from learners.model import TextClassifier

META_FILE = "meta.json"
#: Which examples a version consumed since its parent (ids trained, held out, skipped): small,
#: and kept when a pruned version's weights are deleted, so the lineage stays auditable.
LINEAGE_FILE = "lineage.json"
SERVING_FILE = "serving.json"
COUNTER_FILE = "registry.json"
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

    # what a backend implements ----------------------------------------------------------------
    @abstractmethod
    def create(self, write_files: WriteFiles, new: NewVersion) -> VersionMeta:
        """Write a new version: ``write_files(folder)`` fills it (and may return ``new`` completed
        with what only the written files tell); returns the stored metadata."""

    @abstractmethod
    def versions(self) -> list[VersionMeta]:
        """Metadata of every version, oldest first (a version with corrupt metadata is left out)."""

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
    def serving_state(self) -> ServingState:
        """The serving pointer (nothing serving: ``ServingState()``)."""

    @abstractmethod
    def _write_serving_state(self, state: ServingState) -> None: ...

    @abstractmethod
    def _delete_files(self, version: int, names: list[str] | None) -> None:
        """Delete the named files of a version (None: every file but :data:`KEPT_FILES`), in
        storage and in any local copy. Its metadata is updated before."""

    # shared behaviour -------------------------------------------------------------------------
    def load_model(self, version: int) -> TextClassifier:
        """The version's model, ready for inference (a ``TextClassifier`` in eval mode);
        RegistryError when its files are missing or corrupt."""
        from learners.model import TextClassifier  # torch only where a model is loaded

        return TextClassifier.load(self.local_path(version)).eval()

    def serving(self) -> int | None:
        """The version the endpoint must serve, or None."""
        return self.serving_state().version

    def set_serving(self, version: int, pinned: bool | None = None, floor: int | None = None) -> ServingState:
        """Point the endpoint at ``version`` (which must exist); the previous one joins the
        history. ``pinned``/``floor`` change those fields when given (the floor never drops)."""
        self.meta(version)  # must exist
        state = self.serving_state()
        history = [v for v in state.history if v != version]
        if state.version is not None and state.version != version:
            history.append(state.version)
        changes: dict[str, Any] = {"version": version, "ts": time.time(), "history": history[-HISTORY:]}
        if pinned is not None:
            changes["pinned"] = pinned
        if floor is not None:
            changes["floor"] = max(floor, state.floor)
        state = state.model_copy(update=changes)
        self._write_serving_state(state)
        return state

    def set_pinned(self, pinned: bool) -> ServingState:
        """Pin (or unpin) the serving version: a pinned one is not replaced automatically."""
        state = self.serving_state()
        if state.version is None:
            raise RegistryError("nothing is serving yet")
        state = state.model_copy(update={"pinned": pinned})
        self._write_serving_state(state)
        return state

    def latest(self) -> VersionMeta | None:
        """Newest version whose files are still there."""
        for meta in reversed(self.versions()):
            if not meta.pruned:
                return meta
        return None

    def prune(self, keep_last: int, keep: set[int]) -> list[int]:
        """Delete the files (not ``meta.json``/``lineage.json``) of all but the ``keep_last``
        newest unpruned versions and those in ``keep``; returns the pruned ones."""
        live = [m for m in self.versions() if not m.pruned]
        pruned = []
        for meta in live[: max(0, len(live) - keep_last)]:
            if meta.version in keep:
                continue
            # metadata first: a reader then sees "pruned", and a crash leaves unreferenced files only
            self.update(meta.version, pruned=True, files={})
            self._delete_files(meta.version, None)
            pruned.append(meta.version)
        return pruned

    def drop_files(self, version: int, names: list[str]) -> VersionMeta:
        """Delete some files of a version (the learner's state of an older checkpoint); the
        version stays loadable with the files it keeps. Returns the updated metadata."""
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
        return VersionMeta.model_validate(
            {
                "status": new.status,
                "created": time.time(),
                **new.to_json(),
                "version": version,
                "uri": self.version_uri(version),
                "files": files,
            }
        )

    def version_uri(self, version: int) -> str:
        return f"{self.uri.rstrip('/')}/versions/{version:06d}"


__all__ = [
    "COUNTER_FILE",
    "HISTORY",
    "KEPT_FILES",
    "LINEAGE_FILE",
    "META_FILE",
    "SERVING_FILE",
    "Registry",
    "sha256",
]
