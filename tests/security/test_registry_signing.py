"""Registry integrity (issue 15, point 6): with ``STREAMCL_REGISTRY_SIGNING_KEY`` every version
is signed by its writer and refused by readers when unsigned or wrongly signed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from learners import registry
from learners.registry import LocalRegistry, NewVersion, registry_for
from streaming.errors import RegistryError

KEY = "sig-7Hq2Lz9R4wX1mB8nC3vD6tY0pK5sJf"  # random-looking: a placeholder is refused
OTHER = "oth-3Zx8Cv1Bn6Mq9We4Rt7Yu2Io5Pa0Sd"


def _weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "state.bin").write_bytes(b"state")


def _refused(reg: LocalRegistry, version: int, match: str) -> None:
    with pytest.raises(RegistryError, match=match):
        reg.meta(version)
    with pytest.raises(RegistryError, match=match):
        reg.local_path(version)  # what replicas, the gate and the learner's resume load through
    with pytest.raises(RegistryError, match=match):
        reg.load_model(version)
    assert [m.version for m in reg.versions()] == [] and version in reg.unreadable  # the controller's gauge


def test_unsigned_version_refused_when_key_set(tmp_path: Path) -> None:
    """An unsigned version (written by whoever can write the bucket) was loaded by every reader."""
    meta = LocalRegistry(tmp_path).create(_weights, NewVersion())
    _refused(LocalRegistry(tmp_path, signing_key=KEY), meta.version, "not signed")


def test_wrong_signature_refused(tmp_path: Path) -> None:
    """A version signed with another key, or whose checksums changed after signing, was loaded."""
    meta = LocalRegistry(tmp_path, signing_key=OTHER).create(_weights, NewVersion())
    _refused(LocalRegistry(tmp_path, signing_key=KEY), meta.version, "wrong signature")
    # checksums (and the files) replaced by whoever can write storage, the signature kept
    path = tmp_path / "versions" / f"{meta.version:06d}" / "meta.json"
    stored = json.loads(path.read_text())
    stored["files"]["model.safetensors"] = "0" * 64
    path.write_text(json.dumps(stored))
    _refused(LocalRegistry(tmp_path, signing_key=OTHER), meta.version, "wrong signature")


def test_signature_roundtrip(tmp_path: Path) -> None:
    """Versions written with the key are signed, stay valid through status changes, drops and
    pruning, and load; without a key nothing is signed (behaviour as before)."""
    reg = LocalRegistry(tmp_path, signing_key=SecretStr(KEY))
    first = reg.create(_weights, NewVersion(state_files=["state.bin"]))
    assert first.signature is not None and first.signature.startswith("hmac-sha256:")
    second = reg.create(_weights, NewVersion(parent=first.version))
    reader = LocalRegistry(tmp_path, signing_key=KEY)
    assert (reader.local_path(first.version) / "model.safetensors").read_bytes() == b"weights"
    reader.update(first.version, status="rejected", reason="gate")
    reg.drop_files(first.version, ["state.bin"])  # the manifest changes: signed again
    assert "state.bin" not in reader.meta(first.version).files
    reader.local_path(first.version)
    reg.set_serving(second.version)
    assert reg.prune(keep_last=1, keep=set()) == [first.version]
    assert [m.version for m in reader.versions()] == [1, 2] and reader.unreadable == frozenset()
    assert "signature" not in LocalRegistry(tmp_path / "plain").create(_weights, NewVersion()).to_json()


def test_short_signing_key_refused(tmp_path: Path) -> None:
    """A signing key under 32 characters (or empty) would sign with a guessable secret: refused at start."""
    for short in ("", "change-me", "x" * 31):
        with pytest.raises(RegistryError, match="at least 32") as caught:
            LocalRegistry(tmp_path, signing_key=short)
        assert not short or short not in str(caught.value)

    class Settings(registry.SigningSettings, BaseModel):  # type: ignore[name-defined,misc]
        pass

    with pytest.raises(ValidationError, match="at least 32"):
        Settings(registry_signing_key=SecretStr("change-me"))
    assert KEY not in repr(Settings(registry_signing_key=SecretStr(KEY)))


def test_registry_for_signs_with_the_settings_key(tmp_path: Path) -> None:
    """The services open the registry through registry_for: the settings' key reaches it."""
    stream = SimpleNamespace(state_dir=tmp_path)
    learner = SimpleNamespace(registry_uri=str(tmp_path / "reg"), registry_signing_key=SecretStr(KEY))
    meta = registry_for(stream, learner).create(_weights, NewVersion())  # type: ignore[arg-type]
    assert meta.signature is not None
    plain = LocalRegistry(tmp_path / "reg2")
    unsigned = plain.create(_weights, NewVersion())
    learner.registry_uri = str(tmp_path / "reg2")
    with pytest.raises(RegistryError, match="not signed"):
        registry_for(stream, learner).meta(unsigned.version)  # type: ignore[arg-type]
