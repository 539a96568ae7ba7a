"""Findings of the review of the issue-15 code: each test proves one (its docstring names it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from learners import registry
from learners.registry import LocalRegistry, NewVersion
from services.settings import ServeSettings
from streaming.deadletter import DeadLetterPolicy
from streaming.errors import RegistryError
from streaming.events import DeadLetter
from streaming.pii import Masker

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "app-R2tY7uI1oP6aS9dF4gH3jK8lZ5xC0vB"
PREDICT = {"texts": ["hello"]}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_file_emptied_at_runtime_stays_closed(make_app, tmp_path):
    """A tokens file rewritten to {} at runtime made predict and feedback anonymous on 0.0.0.0."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"app": {"token": TOKEN, "roles": ["predict", "feedback"]}}))
    app, _ = make_app(tokens_file=tokens)
    c = TestClient(app)
    assert c.post("/v1/predict", json=PREDICT, headers=_bearer(TOKEN)).status_code == 200
    (tmp_path / "next.json").write_text("{}")
    os.replace(tmp_path / "next.json", tokens)  # the Secret rotated to an empty object
    assert c.post("/v1/predict", json=PREDICT).status_code == 401
    assert c.post("/v1/feedback", json={"id": "a", "label": "b"}).status_code == 401
    assert c.post("/v1/predict", json=PREDICT, headers=_bearer(TOKEN)).status_code == 200  # the last tokens kept
    with pytest.raises(ValidationError, match="holds no token"):
        ServeSettings(tokens_file=tokens)  # at start-up an empty file refuses to start
    assert ServeSettings(tokens_file=None, allow_anonymous=True).tokens_file is None


def test_guard_fixed_at_construction(tmp_path, monkeypatch):
    """The guard was `bool(self.grants())`: any way the grants became empty at runtime opened the API."""
    from services import _auth

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"app": {"token": TOKEN, "roles": ["predict"]}}))
    auth = _auth.Authenticator([], tokens)
    monkeypatch.setattr(_auth, "load_tokens_file", lambda path: [])
    tokens.write_text(json.dumps({"app": {"token": TOKEN, "roles": ["predict"]}, "x": {}}))  # a change is seen
    assert auth.grants() == [] and auth.guards("predict")
    with pytest.raises(_auth.Refused) as refused:
        auth.authenticate("", "predict")
    assert refused.value.status == 401
    assert not _auth.Authenticator([]).guards("predict")  # nothing configured: open (loopback only)


@pytest.mark.parametrize("key", ["change-me-to-at-least-32-random-characters", " " * 32, "a" * 40, f" {TOKEN}"])
def test_placeholder_signing_key_refused(tmp_path, key):
    """A placeholder registry signing key (the example Secret's, 32 spaces) passed: only its length was checked."""
    with pytest.raises(RegistryError) as caught:
        LocalRegistry(tmp_path, signing_key=key)
    assert not key.strip() or key.strip() not in str(caught.value)

    class Settings(registry.SigningSettings, BaseModel):  # type: ignore[misc]
        pass

    with pytest.raises(ValidationError, match="STREAMCL_REGISTRY_SIGNING_KEY"):
        Settings(registry_signing_key=key)
    LocalRegistry(tmp_path, signing_key=TOKEN)  # a random one is accepted


def test_example_secret_has_no_usable_placeholder_key():
    """deploy/k8s/secret.example.yaml showed a 40-character placeholder signing key that passed the check."""
    example = (ROOT / "deploy/k8s/secret.example.yaml").read_text()
    assert "change-me-to-at-least" not in example
    assert "secrets.token_urlsafe(48)" in example


def _version_files(folder: Path) -> None:
    for name in ("model.safetensors", "holdout.json", "replay.json"):
        (folder / name).write_bytes(name.encode())


def test_prune_past_stray_dotfile(tmp_path):
    """A crash inside write_json_atomic left `.meta.json.XXXX`: prune then raised on it and kept holdout.json."""
    reg = LocalRegistry(tmp_path)
    first = reg.create(_version_files, NewVersion())
    reg.create(_version_files, NewVersion(parent=first.version))
    folder = tmp_path / "versions" / f"{first.version:06d}"
    (folder / ".meta.json.k3j2_x").write_text("{")
    assert reg.prune(keep_last=1, keep=set()) == [first.version]
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json"]
    assert reg.meta(first.version).pruned


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker()


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        (b'{"id": "x", "text": "see https:\\/\\/bob:hunter2@example.com now"}', "bob"),
        (b'{"id": "x", "text": "mail jos\\u00e9.smith@example.com now"}', "jos"),
        (b'{"id": "x", "text": "see https:\\/\\/bob:hunter2@example.com and more', "bob"),  # cut: not JSON
        (b'{"id": "x", "text": "mail jos\\u00e9.smith@example.com and more', "jos"),
    ],
)
def test_dlq_masks_json_escaped_values(masker, raw, secret):
    """DLQ masking ran on the JSON-escaped payload: `https:\\/\\/bob:pw@…` kept `bob:`, `jos\\u00e9.…` kept `jos\\`."""
    dead = DeadLetter.for_message("t.texts", 0, 7, raw, "invalid_event", "bad")
    out = DeadLetterPolicy(4096, masker).apply(dead)
    assert secret not in out.payload and "hunter2" not in out.payload and "smith" not in out.payload
    assert out.payload.startswith('{"id": "x", "text": ')


def test_dlq_unescape_keeps_structure():
    """Undoing escapes must not change what the payload says: quotes, backslashes, lone surrogates stay escaped."""
    from streaming.deadletter import unescaped

    assert unescaped('{"a": "x\\\\/y') == '{"a": "x\\\\/y'  # an escaped backslash, then a slash
    assert unescaped('{"a": "q\\u0022 \\ud83d \\ud83d\\ude00 \\n') == '{"a": "q\\u0022 \\ud83d \U0001f600 \\n'
    assert unescaped('{"a": "caf\\u00e9"}') == '{"a": "café"}'


SIGNING = "sig-7Hq2Lz9R4wX1mB8nC3vD6tY0pK5sJf"


def _with_lineage(folder: Path) -> None:
    _version_files(folder)
    (folder / "lineage.json").write_text(json.dumps({"trained": ["a", "b"]}))


def _tamper(path: Path, **changes: object) -> None:
    stored = json.loads(path.read_text())
    stored.update(changes)
    path.write_text(json.dumps(stored))


@pytest.mark.parametrize(
    "changes",
    [{"offsets": {"t.labeled:0": 99999}}, {"status": "promoted"}, {"pruned": True}, {"state_files": []},
     {"dropped": ["holdout.json"]}, {"metrics": {"examples_trained": 10**9}}],
)  # fmt: skip
def test_signature_covers_every_field(tmp_path, changes):
    """The signature covered files, model, parent and version only: offsets, status, pruned, metrics were open."""
    reg = LocalRegistry(tmp_path, signing_key=SIGNING)
    meta = reg.create(_with_lineage, NewVersion(offsets={"t.labeled:0": 5}, state_files=["replay.json"]))
    reg.update(meta.version, gate={"gate_examples": 3})  # the controller's writes are signed again
    _tamper(tmp_path / "versions" / f"{meta.version:06d}" / "meta.json", **changes)
    with pytest.raises(RegistryError, match="wrong signature"):
        LocalRegistry(tmp_path, signing_key=SIGNING).meta(meta.version)


def test_lineage_checked_against_manifest(tmp_path):
    """lineage.json was trusted as read: its checksum in the (signed) metadata was never compared."""
    reg = LocalRegistry(tmp_path, signing_key=SIGNING)
    meta = reg.create(_with_lineage, NewVersion())
    assert reg.lineage(meta.version) == {"trained": ["a", "b"]}
    (tmp_path / "versions" / f"{meta.version:06d}" / "lineage.json").write_text('{"trained": []}')
    with pytest.raises(RegistryError, match="checksum"):
        reg.lineage(meta.version)


def test_local_path_refuses_unlisted_file(tmp_path):
    """A file added to a version folder (added_tokens.json) was read by the tokenizer though no manifest listed it."""
    reg = LocalRegistry(tmp_path, signing_key=SIGNING)
    meta = reg.create(_with_lineage, NewVersion(state_files=["replay.json"]))
    folder = reg.local_path(meta.version)
    (folder / ".meta.json.tmp1").write_text("{")  # a write in progress: never read, left alone
    reg.local_path(meta.version)
    (folder / "added_tokens.json").write_text('{"<evil>": 30522}')
    with pytest.raises(RegistryError, match="not in its manifest"):
        reg.local_path(meta.version)
    (folder / "added_tokens.json").unlink()
    (folder / "keep.json").write_text("{}")
    reg.update(meta.version, dropped=["keep.json"])  # a drop whose deletion did not happen (a crash)
    reg.local_path(meta.version)
    assert not (folder / "keep.json").exists()


def test_serving_pointer_signed(tmp_path):
    """serving.json was not signed: whoever writes storage could point every replica at any version."""
    reg = LocalRegistry(tmp_path, signing_key=SIGNING)
    first = reg.create(_version_files, NewVersion())
    second = reg.create(_version_files, NewVersion(parent=first.version))
    reg.set_serving(first.version)
    assert reg.read_serving().problem is None and reg.serving() == first.version
    assert json.loads((tmp_path / "serving.json").read_text())["signature"].startswith("hmac-sha256:")
    for name in ("serving.json", "serving.prev.json"):
        _tamper(tmp_path / name, version=second.version)  # the candidate, never promoted
    read = LocalRegistry(tmp_path, signing_key=SIGNING).read_serving()
    assert read.problem == "corrupt" and read.state.version != second.version
    assert LocalRegistry(tmp_path).serving() == second.version  # without a key nothing is checked
