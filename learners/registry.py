"""The model registry: numbered versions (integers that only grow), their metadata, and the
pointer to the serving version.

A version folder holds the model files and ``meta.json`` (version, parent, status, consumed
offsets, metrics, file checksums). It is written under a temporary name and renamed into
place, so a reader sees a whole version or none. Weights of old versions are pruned by
:meth:`Registry.prune`; their metadata stays, so the lineage is never lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streaming.errors import RegistryError
from streaming.files import write_json_atomic

META_FILE = "meta.json"
#: Which examples a version consumed since its parent (ids trained, held out, skipped): small,
#: and kept when a pruned version's weights are deleted, so the lineage stays auditable.
LINEAGE_FILE = "lineage.json"
SERVING_FILE = "serving.json"
COUNTER_FILE = "registry.json"
HISTORY = 50  # earlier serving versions remembered for rollback


class Registry(ABC):
    """Where versions live. One small interface; a backend is a new file."""

    uri: str

    @abstractmethod
    def create(self, write_files: Callable[[Path], None], meta: dict[str, Any]) -> dict[str, Any]:
        """Write a new version: ``write_files(folder)`` fills it; returns the stored metadata."""

    @abstractmethod
    def versions(self) -> list[dict[str, Any]]:
        """Metadata of every version, oldest first."""

    @abstractmethod
    def meta(self, version: int) -> dict[str, Any]:
        """Metadata of one version (RegistryError if unknown)."""

    @abstractmethod
    def update(self, version: int, **changes: Any) -> dict[str, Any]:
        """Change mutable metadata (status, notes) of a version."""

    @abstractmethod
    def local_path(self, version: int) -> Path:
        """A local folder with the version's files, checksums verified."""

    @abstractmethod
    def serving_state(self) -> dict[str, Any]:
        """The serving pointer: ``version``, ``pinned``, ``history`` (earlier serving versions,
        newest last), ``floor`` (candidates at or below it are not promoted automatically)."""

    @abstractmethod
    def _write_serving_state(self, state: dict[str, Any]) -> None: ...

    def load_model(self, version: int) -> Any:
        """The version's model, ready for inference (a ``TextClassifier`` in eval mode);
        RegistryError when its files are missing or corrupt."""
        from learners.model import TextClassifier  # torch only where a model is loaded

        return TextClassifier.load(self.local_path(version)).eval()

    def serving(self) -> int | None:
        """The version the endpoint must serve, or None."""
        version = self.serving_state().get("version")
        return int(version) if version is not None else None

    def set_serving(self, version: int, pinned: bool | None = None, floor: int | None = None) -> dict[str, Any]:
        """Point the endpoint at ``version`` (which must exist); the previous one joins the
        history. ``pinned``/``floor`` change those fields when given."""
        self.meta(version)  # must exist
        state = self.serving_state()
        previous = state.get("version")
        history = [v for v in state.get("history", []) if v != version]
        if previous is not None and previous != version:
            history.append(previous)
        state.update(version=version, ts=time.time(), history=history[-HISTORY:])
        if pinned is not None:
            state["pinned"] = pinned
        if floor is not None:
            state["floor"] = max(floor, int(state.get("floor", 0)))
        self._write_serving_state(state)
        return state

    def set_pinned(self, pinned: bool) -> dict[str, Any]:
        state = self.serving_state()
        if state.get("version") is None:
            raise RegistryError("nothing is serving yet")
        state["pinned"] = pinned
        self._write_serving_state(state)
        return state

    @abstractmethod
    def prune(self, keep_last: int, keep: set[int]) -> list[int]:
        """Delete the files (not the metadata) of old versions; returns the pruned ones."""

    @abstractmethod
    def drop_files(self, version: int, names: list[str]) -> dict[str, Any]:
        """Delete some files of a version (the learner's state of an older checkpoint); the
        version stays loadable with the files it keeps. Returns the updated metadata."""

    @abstractmethod
    def lineage(self, version: int) -> dict[str, Any] | None:
        """The version's :data:`LINEAGE_FILE` (also after pruning), or None without one."""

    def latest(self) -> dict[str, Any] | None:
        """Newest version whose files are still there."""
        for meta in reversed(self.versions()):
            if not meta.get("pruned"):
                return meta
        return None

    def _full_meta(self, version: int, meta: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
        """A new version's stored metadata: ``meta`` with its number, URI, file checksums and
        status ``candidate`` unless ``meta`` says otherwise."""
        return {
            "status": "candidate",
            "created": time.time(),
            **meta,
            "version": version,
            "uri": self.version_uri(version),
            "files": files,
        }

    def version_uri(self, version: int) -> str:
        return f"{self.uri.rstrip('/')}/versions/{version:06d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalRegistry(Registry):
    """Versions in a local directory: ``versions/000001/…``, ``serving.json``, ``registry.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # update() runs inside other locked operations
        self._verified: dict[Path, tuple[str, int, int, int]] = {}

    def _dir(self, version: int) -> Path:
        return self.root / "versions" / f"{version:06d}"

    def _next_version(self) -> int:
        path = self.root / COUNTER_FILE
        counter = json.loads(path.read_text()).get("next_version", 1) if path.exists() else 1
        existing = [int(p.name) for p in (self.root / "versions").iterdir() if p.name.isdigit()]
        version = max([counter, *(v + 1 for v in existing)])
        write_json_atomic(path, {"next_version": version + 1})
        return version

    def create(self, write_files: Callable[[Path], None], meta: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            tmp = Path(tempfile.mkdtemp(dir=self.root / "versions", prefix=".tmp-"))
            try:
                write_files(tmp)
                version = self._next_version()
                files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
                full = self._full_meta(version, meta, files)
                write_json_atomic(tmp / META_FILE, full)
                for p in tmp.iterdir():  # make the files durable before the rename publishes them
                    with p.open("rb") as f:
                        os.fsync(f.fileno())
                os.rename(tmp, self._dir(version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return full

    def versions(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.root / "versions").iterdir()):
            if p.name.isdigit() and (p / META_FILE).exists():
                try:
                    out.append(json.loads((p / META_FILE).read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    continue  # a corrupt meta.json: the version is not listed
        return out

    def meta(self, version: int) -> dict[str, Any]:
        path = self._dir(version) / META_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"version {version} does not exist", version) from None
        except ValueError as exc:
            raise RegistryError(f"version {version} has corrupt metadata: {exc}", version) from None

    def update(self, version: int, **changes: Any) -> dict[str, Any]:
        with self._lock:
            meta = {**self.meta(version), **changes}
            write_json_atomic(self._dir(version) / META_FILE, meta)
            return meta

    def local_path(self, version: int) -> Path:
        meta = self.meta(version)
        if meta.get("pruned"):
            raise RegistryError(f"the files of version {version} were pruned", version)
        folder = self._dir(version)
        for name, digest in meta.get("files", {}).items():
            path = folder / name
            try:
                st = path.stat()
            except OSError:
                raise RegistryError(f"version {version}: {name} is missing", version) from None
            # a version's files never change once written: a file with the same size, mtime and
            # inode as when it last matched its checksum is not read again (any rewrite changes them)
            stamp = (digest, st.st_size, st.st_mtime_ns, st.st_ino)
            if self._verified.get(path) == stamp:
                continue
            if _sha256(path) != digest:
                raise RegistryError(f"version {version}: {name} is missing or corrupt (checksum)", version)
            self._verified[path] = stamp
        return folder

    def drop_files(self, version: int, names: list[str]) -> dict[str, Any]:
        with self._lock:
            meta = self.meta(version)
            gone = [n for n in names if n in meta.get("files", {}) and n not in (META_FILE, LINEAGE_FILE)]
            files = {k: v for k, v in meta.get("files", {}).items() if k not in gone}
            # metadata first: a reader never checks a file that is about to go
            meta = self.update(version, files=files, dropped=sorted({*meta.get("dropped", []), *gone}))
            for name in gone:
                (self._dir(version) / name).unlink(missing_ok=True)
            return meta

    def lineage(self, version: int) -> dict[str, Any] | None:
        path = self._dir(version) / LINEAGE_FILE
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"version {version}: unreadable {LINEAGE_FILE}: {exc}", version) from None

    def serving_state(self) -> dict[str, Any]:
        path = self.root / SERVING_FILE
        try:
            state = json.loads(path.read_text())
            int(state["version"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return {"version": None, "pinned": False, "history": [], "floor": 0}
        return {"pinned": False, "history": [], "floor": 0, **state}

    def _write_serving_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            write_json_atomic(self.root / SERVING_FILE, state)

    def prune(self, keep_last: int, keep: set[int]) -> list[int]:
        live = [m for m in self.versions() if not m.get("pruned")]
        pruned = []
        for meta in live[: max(0, len(live) - keep_last)]:
            version = meta["version"]
            if version in keep:
                continue
            folder = self._dir(version)
            for p in folder.iterdir():
                if p.name not in (META_FILE, LINEAGE_FILE):
                    p.unlink()
            self.update(version, pruned=True, files={})
            pruned.append(version)
        return pruned


def open_registry(uri: str | Path, cache_dir: str | Path | None = None) -> Registry:
    """A registry for ``uri``: a local path, a ``file://`` URI or ``s3://bucket/prefix`` (S3 or an
    S3-compatible store; ``cache_dir`` holds the downloaded versions)."""
    text = str(uri)
    if text.startswith("file://"):
        return LocalRegistry(text[len("file://") :])
    if text.startswith("s3://"):
        from learners.s3registry import S3Registry  # boto3 is imported only when used

        bucket, _, prefix = text[len("s3://") :].partition("/")
        return S3Registry(bucket, prefix, cache_dir=cache_dir)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise RegistryError(f"unsupported registry URI scheme {scheme!r} (supported: a local path, file://, s3://)")
    return LocalRegistry(text)
