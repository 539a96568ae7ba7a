"""Registry integrity (issue 15, point 6): names from a version's metadata, a pointer or a caller
never reach the file system outside the version's folder; version ids are checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from learners.registry import LocalRegistry, NewVersion
from learners.registry.base import SERVING_FILE
from streaming.errors import RegistryError


def _weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "state.bin").write_bytes(b"state")


def _tamper(reg: LocalRegistry, version: int, **changes: object) -> None:
    """Rewrite a stored meta.json as whoever can write the registry's storage would."""
    path = reg.root / "versions" / f"{version:06d}" / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _planted(tmp_path: Path) -> tuple[Path, str]:
    """A file outside the registry, and its checksum (so a checksum check alone accepts it)."""
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"not the registry's")
    return victim, hashlib.sha256(victim.read_bytes()).hexdigest()


def _refused_everywhere(reg: LocalRegistry, version: int) -> None:
    with pytest.raises(RegistryError):
        reg.meta(version)
    with pytest.raises(RegistryError):
        reg.local_path(version)
    assert version not in [m.version for m in reg.versions()] and version in reg.unreadable


def test_meta_with_dotdot_name_refused(tmp_path: Path) -> None:
    """A ``..`` file name in meta.json made replicas read (and trust) a file outside the version folder."""
    reg = LocalRegistry(tmp_path / "registry")
    meta = reg.create(_weights, NewVersion())
    _victim, digest = _planted(tmp_path)
    _tamper(reg, meta.version, files={**meta.files, "../../../outside/victim.txt": digest})
    _refused_everywhere(reg, meta.version)


def test_absolute_name_refused(tmp_path: Path) -> None:
    """An absolute file name in meta.json was joined to the version folder as that absolute path."""
    reg = LocalRegistry(tmp_path / "registry")
    meta = reg.create(_weights, NewVersion())
    victim, digest = _planted(tmp_path)
    _tamper(reg, meta.version, files={**meta.files, str(victim): digest})
    _refused_everywhere(reg, meta.version)


def test_separator_empty_and_overlong_names_refused(tmp_path: Path) -> None:
    """File names with a separator, empty, with a leading dot or over 128 characters were accepted from meta.json."""
    reg = LocalRegistry(tmp_path / "registry")
    for bad in ("sub/model.bin", "sub\\model.bin", "", ".etags.json", "x" * 129):
        meta = reg.create(_weights, NewVersion())
        _tamper(reg, meta.version, files={**meta.files, bad: "0" * 64})
        _refused_everywhere(reg, meta.version)


def test_too_many_files_refused(tmp_path: Path) -> None:
    """A meta.json listing a million files was accepted (the count of names is bounded)."""
    reg = LocalRegistry(tmp_path / "registry")
    meta = reg.create(_weights, NewVersion())
    _tamper(reg, meta.version, files={f"f{i}": "0" * 64 for i in range(1001)})
    _refused_everywhere(reg, meta.version)


def test_drop_files_outside_refused(tmp_path: Path) -> None:
    """``drop_files`` deleted any file a version's metadata named, ``../`` paths included."""
    reg = LocalRegistry(tmp_path / "registry")
    meta = reg.create(_weights, NewVersion(state_files=["state.bin"]))
    victim, digest = _planted(tmp_path)
    with pytest.raises(RegistryError):
        reg.drop_files(meta.version, ["../../../outside/victim.txt"])
    _tamper(reg, meta.version, files={**meta.files, "../../../outside/victim.txt": digest})
    with pytest.raises(RegistryError):
        reg.drop_files(meta.version, ["../../../outside/victim.txt"])
    assert victim.exists()


def test_meta_of_another_version_refused(tmp_path: Path) -> None:
    """A version folder holding another version's meta.json (a replayed copy) was served as that version."""
    reg = LocalRegistry(tmp_path / "registry")
    first = reg.create(_weights, NewVersion())
    second = reg.create(_weights, NewVersion(parent=first.version))
    copied = (reg.root / "versions" / f"{first.version:06d}" / "meta.json").read_bytes()
    (reg.root / "versions" / f"{second.version:06d}" / "meta.json").write_bytes(copied)
    _refused_everywhere(reg, second.version)


def test_version_id_format_refused(tmp_path: Path) -> None:
    """Version ids that are not positive integers (a bool, a string, 0, negative) reached paths and pointers."""
    reg = LocalRegistry(tmp_path / "registry")
    reg.create(_weights, NewVersion())
    for bad in (0, -1, True, "1/../..", 10**10):
        with pytest.raises(RegistryError, match="version id"):
            reg.meta(bad)  # type: ignore[arg-type]
    # a folder with non-ASCII digits is not a version
    (reg.root / "versions" / "\u0663\u0663\u0663\u0663\u0663\u0663").mkdir()
    assert [m.version for m in reg.versions()] == [1]


def test_pointer_with_bad_version_recovered(tmp_path: Path) -> None:
    """A serving.json naming version -1 (or a negative history) was taken as the serving version."""
    reg = LocalRegistry(tmp_path / "registry")
    meta = reg.create(_weights, NewVersion())
    reg.set_serving(meta.version)
    (reg.root / SERVING_FILE).write_text(json.dumps({"version": -1, "history": [-5]}))
    assert reg.serving() == meta.version  # recovered from its copy, never -1


def test_pointer_name_outside_refused(tmp_path: Path) -> None:
    """Pointer files were written at any name joined to the registry root, ``..`` included."""
    reg = LocalRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError):
        reg._write_pointer("../escaped.json", {"version": 1})
    with pytest.raises(RegistryError):
        reg._read_pointer("/etc/hostname")
    assert not (tmp_path / "escaped.json").exists()
