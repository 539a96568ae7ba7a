"""What the registry accepts from storage before it touches a file system: file names of a
version (from ``meta.json``, a listing, a caller), version numbers and pointer names.

Whoever can write the bucket (or the registry folder) writes ``meta.json``; its file names are
joined to local paths on every replica, the learner and the controller. Only a plain name in
the version's own folder is accepted: no absolute path, no ``..``, no separator, no leading
dot (the cache's own records), bounded length and count. Anything else is a RegistryError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from streaming.errors import RegistryError

__all__ = [
    "MAX_FILES",
    "MAX_NAME_CHARS",
    "MAX_VERSION",
    "check_name",
    "check_names",
    "check_version",
    "inside",
    "version_folder",
    "version_of_folder",
]

#: Longest file name of a version (bytes and characters: the names are ASCII).
MAX_NAME_CHARS = 128
#: Most files one version holds.
MAX_FILES = 1000
#: Highest version number (nine digits in a folder name).
MAX_VERSION = 999_999_999
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_FOLDER = re.compile(r"[0-9]{6,9}")


def check_name(name: object, version: int | None = None) -> str:
    """``name`` when it is a plain file name of a version's folder; else RegistryError."""
    if not isinstance(name, str) or not name:
        raise RegistryError(f"version {version}: refused file name {name!r}: empty or not a string", version)
    if len(name) > MAX_NAME_CHARS:
        raise RegistryError(f"version {version}: refused file name {name[:40]!r}…: over {MAX_NAME_CHARS} characters")
    if ".." in name or not _NAME.fullmatch(name):
        why = "a path, not a plain file name (letters, digits, '.', '_', '-'; no '..', no leading dot)"
        raise RegistryError(f"version {version}: refused file name {name!r}: {why}", version)
    return name


def check_names(names: Iterable[object], version: int | None = None) -> list[str]:
    """Every name checked (:func:`check_name`), and at most :data:`MAX_FILES` of them."""
    checked = []
    for name in names:
        checked.append(check_name(name, version))
        if len(checked) > MAX_FILES:
            raise RegistryError(f"version {version}: refused: more than {MAX_FILES} files", version)
    return checked


def inside(folder: Path, name: str, version: int | None = None) -> Path:
    """``folder / name`` for a checked name (the path is in ``folder``, never above or beside it)."""
    path = folder / check_name(name, version)
    if path.parent != folder:  # cannot happen for a checked name; kept as the last word
        raise RegistryError(f"version {version}: refused file name {name!r}: outside the version's folder", version)
    return path


def check_version(version: object) -> int:
    """A version number: an int in 1..:data:`MAX_VERSION` (a bool is not one); else RegistryError."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise RegistryError(f"refused version id {version!r}: not an integer in 1..{MAX_VERSION}")
    return version


def version_folder(version: object) -> str:
    """The folder (S3 prefix) name of a version: six digits at least."""
    return f"{check_version(version):06d}"


def version_of_folder(name: str) -> int | None:
    """The version a folder name holds (ASCII digits, 6 to 9 of them), None for anything else."""
    return int(name) if _FOLDER.fullmatch(name) and int(name) >= 1 else None
