import json
from pathlib import Path

import pytest

from learners.registry import LocalRegistry, NewVersion, open_registry
from streaming.errors import RegistryError


def write(content: bytes, lineage: bytes | None = None):
    def files(folder):
        (folder / "model.safetensors").write_bytes(content)
        if lineage is not None:
            (folder / "lineage.json").write_bytes(lineage)

    return files


def test_versions_only_grow_and_keep_lineage(tmp_path):
    reg = LocalRegistry(tmp_path)
    assert reg.latest() is None and reg.serving() is None
    v1 = reg.create(write(b"one"), NewVersion(parent=None))
    v2 = reg.create(write(b"two"), NewVersion(parent=1))
    v3 = reg.create(write(b"three"), NewVersion(parent=2))
    assert [v1.version, v2.version, v3.version] == [1, 2, 3]
    assert v3.status == "candidate" and v3.uri.endswith("/versions/000003")
    reg.set_serving(1)
    assert reg.prune(keep_last=1, keep={1}) == [2]
    assert reg.meta(2).pruned is True
    with pytest.raises(RegistryError):
        reg.local_path(2)
    assert (reg.local_path(1) / "model.safetensors").read_bytes() == b"one"
    # a new registry object on the same folder continues the numbering
    assert LocalRegistry(tmp_path).create(write(b"four"), NewVersion()).version == 4
    assert [m.version for m in reg.versions()] == [1, 2, 3, 4]
    assert reg.latest().version == 4


def test_corrupt_files_are_detected(tmp_path):
    reg = LocalRegistry(tmp_path)
    meta = reg.create(write(b"weights"), NewVersion())
    (reg.local_path(meta.version) / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="corrupt"):
        reg.local_path(meta.version)


def test_failed_write_leaves_no_version(tmp_path):
    reg = LocalRegistry(tmp_path)

    def boom(folder):
        (folder / "half").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        reg.create(boom, NewVersion())
    assert reg.versions() == []
    assert not [p for p in (tmp_path / "versions").iterdir()]


def test_unknown_versions_and_schemes(tmp_path):
    reg = LocalRegistry(tmp_path)
    with pytest.raises(RegistryError):
        reg.meta(7)
    with pytest.raises(RegistryError):
        reg.set_serving(7)
    assert isinstance(open_registry(f"file://{tmp_path}"), LocalRegistry)
    with pytest.raises(RegistryError, match="unsupported"):
        open_registry("gopher://x/y")


def test_a_pruned_version_keeps_its_lineage(tmp_path):
    reg = LocalRegistry(tmp_path)
    reg.create(write(b"one", b'{"trained": ["a", "b"], "held_out": [], "skipped": []}'), NewVersion(parent=None))
    reg.create(write(b"two"), NewVersion(parent=1))
    assert reg.prune(keep_last=1, keep=set()) == [1]
    assert reg.lineage(1) == {"trained": ["a", "b"], "held_out": [], "skipped": []}
    assert reg.lineage(2) is None


def test_dropped_files_go_and_the_version_still_loads(tmp_path):
    reg = LocalRegistry(tmp_path)

    def files(folder):
        write(b"weights")(folder)
        (folder / "replay.json").write_text("[]")

    reg.create(files, NewVersion(parent=None))
    meta = reg.drop_files(1, ["replay.json", "meta.json", "absent.json"])
    assert meta.dropped == ["replay.json"] and set(meta.files) == {"model.safetensors"}
    folder = reg.local_path(1)  # checksums of what is left still verify
    assert not (folder / "replay.json").exists() and (folder / "model.safetensors").read_bytes() == b"weights"


def test_meta_json_round_trips_and_keeps_unknown_keys(tmp_path):
    import json

    from learners.registry import VersionMeta, VersionMetrics

    reg = LocalRegistry(tmp_path)
    new = NewVersion(parent=None, offsets={"t:0": 3}, metrics=VersionMetrics(examples_trained=3))
    created = reg.create(write(b"one"), new)
    path = tmp_path / "versions" / "000001" / "meta.json"
    stored = json.loads(path.read_text())
    # the operator contract: integer version and parent, status, offsets, metrics, checksums
    assert stored["version"] == 1 and stored["parent"] is None and stored["status"] == "candidate"
    assert stored["offsets"] == {"t:0": 3} and stored["metrics"] == {"examples_trained": 3}
    assert set(stored["files"]) == {"model.safetensors"} and created.to_json() == stored
    # a meta.json written by older (or newer) code: unknown keys load and survive an update
    path.write_text(json.dumps({**stored, "owner": "team-a", "metrics": {"examples_trained": 3, "bleu": 0.5}}))
    meta = reg.update(1, status="rejected", reason="gate", gate={"gate_accuracy": 0.5, "custom": 1})
    again = json.loads(path.read_text())
    assert again["owner"] == "team-a" and again["metrics"]["bleu"] == 0.5 and again["gate"]["custom"] == 1
    assert meta.status == "rejected" and meta.gate is not None and meta.gate.gate_accuracy == 0.5
    assert VersionMeta.model_validate(again) == reg.meta(1)
    with pytest.raises(RegistryError):
        reg.update(1, status="bogus")  # validated: a wrong value is refused, the file is unchanged
    assert json.loads(path.read_text()) == again


def test_corrupt_metadata_is_refused_and_not_listed(tmp_path):
    reg = LocalRegistry(tmp_path)
    reg.create(write(b"one"), NewVersion())
    reg.create(write(b"two"), NewVersion(parent=1))
    (tmp_path / "versions" / "000001" / "meta.json").write_text('{"version": "one"')
    with pytest.raises(RegistryError, match="corrupt metadata"):
        reg.meta(1)
    assert [m.version for m in reg.versions()] == [2]
    assert reg.unreadable == {1}  # left out, but known: the controller exports it
    (tmp_path / "versions" / "000001" / "meta.json").write_text(json.dumps(reg.meta(2).to_json() | {"version": 1}))
    assert [m.version for m in reg.versions()] == [1, 2] and reg.unreadable == frozenset()


_WRITER = """
import sys
from learners.registry import LocalRegistry

root, field, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reg = LocalRegistry(root)
lost = 0
for i in range(n):
    if reg.meta(1).to_json().get(field, -1) != i - 1:
        lost += 1  # another process wrote back an older copy of the metadata
    reg.update(1, **{field: i})
    if i % 10 == 0:
        reg.set_pinned(field == "a")
print(lost)
"""


ROOT = Path(__file__).resolve().parents[2]


def test_processes_updating_one_version_lose_no_field(tmp_path):
    """The learner's and the controller's processes update the same meta.json and pointer: with
    the registry's file lock, neither writes back a stale copy over the other's change."""
    import subprocess
    import sys

    reg = LocalRegistry(tmp_path)
    reg.create(write(b"one"), NewVersion())
    reg.set_serving(1)
    n = 150
    run = [sys.executable, "-c", _WRITER, str(tmp_path)]
    procs = [subprocess.Popen([*run, f, str(n)], stdout=subprocess.PIPE, text=True, cwd=ROOT) for f in ("a", "b")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [int(out) for out in outs] == [0, 0]
    extra = reg.meta(1).to_json()
    assert (extra["a"], extra["b"]) == (n - 1, n - 1)
    assert reg.read_serving().problem is None and reg.serving() == 1


def test_one_learner_holds_the_lease_and_a_fenced_one_writes_nothing(tmp_path):
    from learners.registry import LeaseError

    reg, other = LocalRegistry(tmp_path), LocalRegistry(tmp_path)
    first = reg.acquire_lease("learner-a", ttl_s=20, now=100.0)
    assert (first.owner, first.epoch, first.expires) == ("learner-a", 1, 120.0)
    with pytest.raises(LeaseError, match="learner-a") as refused:
        other.acquire_lease("learner-b", ttl_s=20, now=110.0)  # live: a second learner cannot start
    assert refused.value.owner == "learner-a" and refused.value.expires == 120.0
    assert reg.acquire_lease("learner-a", ttl_s=20, now=110.0).epoch == 1  # the same process, rebuilt
    first = reg.renew_lease(first, ttl_s=20, now=115.0)
    assert first.expires == 135.0
    taken = other.acquire_lease("learner-b", ttl_s=20, now=136.0)  # expired: taken over
    assert (taken.owner, taken.epoch) == ("learner-b", 2)
    with pytest.raises(LeaseError, match="lost its lease"):
        reg.renew_lease(first, ttl_s=20, now=137.0)  # the zombie is fenced
    reg.release_lease(first)  # a lost lease is not released by its old owner
    assert other.renew_lease(taken, ttl_s=20, now=138.0).epoch == 2
    other.release_lease(taken)
    assert reg.acquire_lease("learner-a", ttl_s=20).epoch == 3  # released: no wait
