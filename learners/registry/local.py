"""The registry in a local directory: ``versions/000001/…``, ``serving.json`` (and its copy
``serving.prev.json``), ``registry.json``.

A version is written under a temporary name, made durable, and renamed into place, so a
reader sees a whole version or none. Every read-modify-write (version numbers, metadata
updates, the serving pointer) holds ``.lock`` in the root with ``flock``, so the learner's and
the controller's processes never undo each other's changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from learners.registry._bases import based
from learners.registry._filelock import FileLock
from learners.registry._meta import NewVersion, VersionMeta, WriteFiles
from learners.registry._names import check_name, inside, version_folder, version_of_folder
from learners.registry._signing import signer_for
from learners.registry.base import (
    AUDIT_FILE,
    COUNTER_FILE,
    KEPT_FILES,
    LINEAGE_FILE,
    META_FILE,
    Registry,
    sha256,
)
from streaming.errors import RegistryError
from streaming.files import write_json_atomic

__all__ = ["LOCK_FILE", "LocalRegistry"]

LOCK_FILE = ".lock"


class LocalRegistry(Registry):
    """Versions in a local directory; with ``signing_key``, every version written is signed and
    every version read must be (learners/registry/_signing.py)."""

    def __init__(self, root: str | Path, signing_key: SecretStr | str | None = None) -> None:
        self._signer = signer_for(signing_key)
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.root / LOCK_FILE)  # threads and processes; re-entrant
        self._verified: dict[Path, tuple[str, int, int, int]] = {}

    def _dir(self, version: int) -> Path:
        return self.root / "versions" / version_folder(version)

    def _next_version(self) -> int:
        path = self.root / COUNTER_FILE
        counter = json.loads(path.read_text()).get("next_version", 1) if path.exists() else 1
        existing = [v for p in (self.root / "versions").iterdir() if (v := version_of_folder(p.name)) is not None]
        version = max([counter, *(v + 1 for v in existing)])
        write_json_atomic(path, {"next_version": version + 1})
        return version

    def create(self, write_files: WriteFiles, new: NewVersion) -> VersionMeta:
        tmp = Path(tempfile.mkdtemp(dir=self.root / "versions", prefix=".tmp-"))
        try:
            new = based(self, tmp, self._completed(write_files(tmp), new))
            files = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            for p in tmp.iterdir():  # make the files durable before the rename publishes them
                with p.open("rb") as f:
                    os.fsync(f.fileno())
            with self._lock:  # only the numbering and the publishing: other writers wait for no upload
                version = self._next_version()
                full = self._full_meta(version, new, files)
                write_json_atomic(tmp / META_FILE, full.to_json())
                os.rename(tmp, self._dir(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return full

    def versions(self) -> list[VersionMeta]:
        out, unreadable = [], {}
        for p in sorted((self.root / "versions").iterdir()):
            version = version_of_folder(p.name)
            if version is not None and (p / META_FILE).exists():
                try:
                    out.append(self._trusted(VersionMeta.parse((p / META_FILE).read_bytes(), version), version))
                except (OSError, RegistryError) as exc:  # corrupt, unsafe or unsigned: the version is not listed
                    unreadable[version] = str(exc)
        return self._listed(out, unreadable)

    def meta(self, version: int) -> VersionMeta:
        try:
            raw = (self._dir(version) / META_FILE).read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"version {version} does not exist", version) from None
        return self._trusted(VersionMeta.parse(raw, version), version)

    def update(self, version: int, **changes: Any) -> VersionMeta:
        with self._lock:
            meta = self._sealed(self.meta(version).changed(**changes))
            write_json_atomic(self._dir(version) / META_FILE, meta.to_json())
            return meta

    def local_path(self, version: int) -> Path:
        meta = self._loadable(version)
        folder = self._dir(version)
        for name, digest in meta.files.items():
            path = inside(folder, name, version)
            try:
                st = path.stat()
            except OSError:
                raise RegistryError(f"version {version}: {name} is missing", version) from None
            # a version's files never change once written: a file with the same size, mtime and
            # inode as when it last matched its checksum is not read again (any rewrite changes them)
            stamp = (digest, st.st_size, st.st_mtime_ns, st.st_ino)
            if self._verified.get(path) == stamp:
                continue
            if sha256(path) != digest:
                raise RegistryError(f"version {version}: {name} is missing or corrupt (checksum)", version)
            self._verified[path] = stamp
        self._no_extras(meta, folder)
        return folder

    @staticmethod
    def _no_extras(meta: VersionMeta, folder: Path) -> None:
        """Refuse a version folder holding a file its (signed) metadata does not list: a loader
        reads what it finds (an added ``added_tokens.json``). A dropped file that is still there
        (a crash between the metadata and the deletion) is deleted; dotfiles (temporary files of
        a write in progress) are never read by a loader and are left alone."""
        for path in folder.iterdir():
            name = path.name
            if name in meta.files or name in KEPT_FILES or name.startswith("."):
                continue
            if name in meta.dropped and path.is_file():
                path.unlink(missing_ok=True)
                continue
            raise RegistryError(f"version {meta.version}: {name[:60]!r} is not in its manifest: refused", meta.version)

    def _exclusive(self) -> FileLock:
        return self._lock

    def _delete_files(self, version: int, names: list[str] | None) -> None:
        folder = self._dir(version)
        if names is None:  # the folder's own listing: every entry is a child of it, whatever its name
            with self._lock:  # (a ``.meta.json.*`` left by a crash included; none is being written now)
                for path in folder.iterdir():
                    if path.name not in KEPT_FILES and path.is_file():
                        path.unlink(missing_ok=True)
            return
        for name in names:  # from metadata: plain names only
            inside(folder, name, version).unlink(missing_ok=True)

    def lineage(self, version: int) -> dict[str, Any] | None:
        try:
            raw = (self._dir(version) / LINEAGE_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"version {version}: unreadable {LINEAGE_FILE}: {exc}", version) from None
        return self._lineage_of(version, raw)

    def append_audit(self, record: dict[str, Any]) -> None:
        """One line of ``audit.jsonl``, written whole under ``flock`` (whatever its size) and fsynced."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            fd = os.open(self.root / AUDIT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RegistryError(f"{self.uri}: cannot append to {AUDIT_FILE}: {exc}") from None

    def _audit_lines(self) -> list[bytes]:
        try:
            return (self.root / AUDIT_FILE).read_bytes().splitlines()
        except FileNotFoundError:
            return []

    def _read_pointer(self, name: str) -> bytes | None:
        try:
            return (self.root / check_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def _write_pointer(self, name: str, payload: dict[str, Any]) -> None:
        write_json_atomic(self.root / check_name(name), payload)
