"""Small versions in the registry: the full version a new delta's base is, whether a delta's
base is there and matches its checksum, and which versions pruning keeps as bases.

The base of a delta is an ordinary full version (the start-up version, usually): its weights
are checksummed and signed like any version's and stored once; the delta's ``meta.json``
names it and the sha256 of its weights file (:class:`~learners.registry._meta.BaseRef`).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from learners._delta import BASES, base_of_folder
from learners.registry._meta import BaseRef, NewVersion, VersionMeta
from streaming.errors import RegistryError

if TYPE_CHECKING:
    from learners.registry.base import Registry

__all__ = ["WEIGHTS", "based", "check_base", "referenced"]

#: The weights file of a version (learners.model.WEIGHTS_FILE: every tensor, or a delta's).
WEIGHTS = "model.safetensors"


def _full(meta: VersionMeta, sha: str) -> bool:
    """Whether ``meta`` is a retained full version whose weights file has checksum ``sha``."""
    return meta.base is None and not meta.pruned and meta.files.get(WEIGHTS) == sha


def based(registry: Registry, folder: Path, new: NewVersion) -> NewVersion:
    """``new`` with its base, when the model written in ``folder`` is a delta: the parent's base,
    the parent itself, or else the newest retained full version with that checksum;
    RegistryError when none is (the version is not written)."""
    sha = base_of_folder(folder)
    if sha is None:
        return new
    candidates: list[VersionMeta] = []
    if new.parent is not None:
        with suppress(RegistryError):
            parent = registry.meta(new.parent)
            ref = parent.base
            candidates = [registry.meta(ref.version)] if ref is not None and ref.sha256 == sha else [parent]
    for meta in [*candidates, *reversed(registry.versions())]:
        if _full(meta, sha):
            return new.model_copy(update={"base": BaseRef(version=meta.version, sha256=sha)})
    raise RegistryError(f"{registry.uri}: the model's base (sha256 {sha}) is no retained full version: refused")


def check_base(registry: Registry, meta: VersionMeta) -> None:
    """Refuse (RegistryError naming the version and the base's checksum) a delta whose base is
    missing, pruned or does not match; else make the base's verified weights known to this
    process's cache of bases (a load then reads only the delta)."""
    ref = meta.base
    if ref is None:
        return
    where = f"version {meta.version}: its base (version {ref.version}, sha256 {ref.sha256})"
    try:
        base = registry.meta(ref.version)
    except RegistryError as exc:
        raise RegistryError(f"{where} is missing ({exc}): refused", meta.version) from None
    if base.pruned or base.base is not None or WEIGHTS not in base.files:
        raise RegistryError(f"{where} is missing (pruned, or not a full version): refused", meta.version)
    if base.files[WEIGHTS] != ref.sha256:
        found = base.files[WEIGHTS]
        raise RegistryError(f"{where} does not match: its weights are sha256 {found}: refused", meta.version)
    try:
        folder = registry.local_path(ref.version)
    except RegistryError as exc:
        raise RegistryError(f"{where} cannot be read ({exc}): refused", meta.version) from None
    BASES.locate(ref.sha256, folder / WEIGHTS)


def referenced(metas: Iterable[VersionMeta]) -> set[int]:
    """The versions that are the bases of ``metas``."""
    return {m.base.version for m in metas if m.base is not None}
