"""The S3 registry's local copies: which object ETag each cached file was verified at, and
whether a cached file still matches its checksum."""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection
from pathlib import Path

from learners.registry._names import version_of_folder
from learners.registry.base import sha256

__all__ = ["CACHE_FILE", "Stamps", "cached_ok", "drop_folders", "etag", "keep_only", "read_record"]

CACHE_FILE = ".etags.json"  # in a cached version folder: the object ETag each file was verified at
#: A cached file's checksum, ETag, size, mtime and inode when it last matched.
Stamps = dict[Path, tuple[str, str, int, int, int]]


def etag(value: str) -> str:
    """An ETag without its quotes."""
    return value.strip('"')


def read_record(folder: Path) -> dict[str, str]:
    """The cached folder's record (file name -> ETag); empty when absent or unreadable."""
    try:
        record = json.loads((folder / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}


def cached_ok(verified: Stamps, path: Path, digest: str, tag: str) -> bool:
    """A cached file still matches its checksum (read again only when its size, mtime or inode changed)."""
    try:
        st = path.stat()
    except OSError:
        return False
    stamp = (digest, tag, st.st_size, st.st_mtime_ns, st.st_ino)
    if verified.get(path) == stamp:
        return True
    if sha256(path) != digest:
        return False
    verified[path] = stamp
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def keep_only(folder: Path, names: Collection[str]) -> None:
    """Delete every entry of a cached version folder its metadata does not list (a file dropped
    or pruned by another process, one put there by hand): a loader reads what it finds, so the
    cache holds only what the version holds. Dotfiles (its record, downloads in progress) stay."""
    for path in folder.iterdir():
        if path.name not in names and not path.name.startswith("."):
            _remove(path)


def drop_folders(root: Path, live: Collection[int], newest: int) -> None:
    """Delete the cached folders of versions up to ``newest`` that are not ``live`` (pruned, or
    gone from the bucket); a newer one may be a version published after the listing."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for path in entries:
        version = version_of_folder(path.name)
        if version is not None and version <= newest and version not in live:
            _remove(path)
