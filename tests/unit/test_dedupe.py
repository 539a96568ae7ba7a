"""The learner's window of taken ids: membership, first-of-a-batch, FIFO eviction, the file,
and its rebuild from the lineage of a version written before the file existed."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from learners.dedupe import DEDUPE_FILE, MAGIC, SeenIds, id_hash, seen_at
from learners.registry import LINEAGE_FILE, LocalRegistry, NewVersion


def test_taken_ids_are_members_and_others_are_not():
    seen = SeenIds(10)
    seen.add(["a", "b"])
    assert "a" in seen and "b" in seen and "c" not in seen
    assert len(seen) == 2
    seen.add(["a"])  # already there: no second entry
    assert len(seen) == 2


def test_first_seen_refuses_taken_ids_and_repeats_within_the_batch():
    seen = SeenIds(10)
    seen.add(["a"])
    assert seen.first_seen(["a", "b", "c", "b", "a", "d"]) == [False, True, True, False, False, True]
    assert "b" not in seen  # asking remembers nothing


def test_the_oldest_ids_leave_first_when_the_window_is_full():
    seen = SeenIds(3)
    seen.add(["a", "b", "c"])
    seen.add(["d"])
    assert "a" not in seen and all(i in seen for i in "bcd")
    seen.add(["b"])  # a member: it does not move to the back
    seen.add(["e"])
    assert "b" not in seen and all(i in seen for i in "cde")


def test_a_zero_window_remembers_nothing():
    seen = SeenIds(0)
    seen.add(["a"])
    assert "a" not in seen and len(seen) == 0
    assert seen.first_seen(["a", "a"]) == [True, False]  # still the first of a batch only


def test_the_hash_is_blake2b_of_the_utf8_id_little_endian():
    digest = hashlib.blake2b("é-1".encode(), digest_size=8).digest()
    assert id_hash("é-1") == int.from_bytes(digest, "little")


def test_file_format_is_magic_then_hashes_oldest_first(tmp_path: Path):
    seen = SeenIds(5)
    seen.add(["x", "y", "z"])
    seen.save(tmp_path)
    raw = (tmp_path / DEDUPE_FILE).read_bytes()
    assert raw[: len(MAGIC)] == MAGIC and len(raw) == len(MAGIC) + 3 * 8
    assert list(struct.unpack("<3Q", raw[len(MAGIC) :])) == [id_hash(i) for i in "xyz"]


def test_save_and_load_keep_the_order_and_the_newest_ids(tmp_path: Path):
    seen = SeenIds(5)
    seen.add([f"id{i}" for i in range(5)])
    raw = seen.to_bytes()
    again = SeenIds.from_bytes(raw, 5)
    assert again.to_bytes() == raw
    again.add(["new"])  # the oldest of the loaded ones leaves first
    assert "id0" not in again and "id1" in again and "new" in again
    smaller = SeenIds.from_bytes(raw, 2)  # a smaller window keeps the newest
    assert len(smaller) == 2 and "id4" in smaller and "id3" in smaller and "id2" not in smaller


@pytest.mark.parametrize("raw", [b"", b"NOTMAGIC", MAGIC + b"123"])
def test_a_file_that_is_not_a_window_raises(raw: bytes):
    with pytest.raises(ValueError):
        SeenIds.from_bytes(raw, 10)


def _version(registry: LocalRegistry, parent: int | None, lineage: dict[str, list[str]] | None) -> int:
    def save(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"w")
        if lineage is not None:
            (folder / LINEAGE_FILE).write_text(json.dumps(lineage))

    consumed = {k: len(v) for k, v in (lineage or {}).items()}
    return registry.create(save, NewVersion(parent=parent, consumed=consumed)).version


def test_a_version_without_the_file_rebuilds_the_window_from_its_lineage(tmp_path: Path, caplog):
    registry = LocalRegistry(tmp_path / "registry")
    v1 = _version(registry, None, None)
    v2 = _version(registry, v1, {"trained": ["a", "b"], "held_out": ["h"], "skipped": ["t:0:3"]})
    v3 = _version(registry, v2, {"trained": ["c"], "backlog_skipped": ["s"], "duplicate": ["a"]})
    meta = registry.meta(v3)
    seen = seen_at(registry, meta, registry.local_path(v3), capacity=100)
    assert all(i in seen for i in ["a", "b", "h", "c", "s"]) and len(seen) == 5
    assert "t:0:3" not in seen  # positions of dead letters are not ids
    assert "rebuilt from the lineage" in caplog.text
    # a small window keeps the newest versions' ids first (whole versions, oldest evicted)
    small = seen_at(registry, meta, registry.local_path(v3), capacity=2)
    assert "c" in small and "s" in small and "a" not in small
    # the start-up version: nothing taken, nothing to rebuild
    assert len(seen_at(registry, registry.meta(v1), registry.local_path(v1), capacity=100)) == 0


def test_the_file_wins_over_the_lineage(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "registry")

    def save(folder: Path) -> None:
        (folder / LINEAGE_FILE).write_text(json.dumps({"trained": ["a"]}))
        stored = SeenIds(10)
        stored.add(["z"])
        stored.save(folder)

    v = registry.create(save, NewVersion(parent=None, consumed={"trained": 1})).version
    meta = registry.meta(v)
    assert DEDUPE_FILE in meta.files  # covered by the version's checksums
    seen = seen_at(registry, meta, registry.local_path(v), capacity=10)
    assert "z" in seen and "a" not in seen
