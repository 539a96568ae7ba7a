"""Erasure by id (issue 15, point 4): each piece that keeps a text takes it out by the example's id."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from learners.base import Example, Learner
from learners.erasure import check_ids, erase_retained, forget_state, scrub, trained_in
from learners.evaluation import HOLDOUT_FILE, Holdout, gate_rows
from learners.memory import ReplayMemory
from learners.registry import LINEAGE_FILE, LocalRegistry, NewVersion
from streaming._join import JoinState
from streaming.events import FeedbackEvent, TextEvent

KEY = "era-Q7wE2rT9yU4iO1pA6sD3fG8hJ5kL0zXc"  # random-looking: a placeholder is refused


def test_replay_memory_forgets_by_id_and_keeps_ids_across_its_state():
    """Replay buffers kept texts without ids: one person's texts could not be found to delete."""
    memory = ReplayMemory(10, 1.0, "reservoir", random.Random(0))
    memory.extend([Example(f"text {i}", "a", None, f"e{i}") for i in range(5)], [[0.1 * i] for i in range(5)])
    again = ReplayMemory(10, 1.0, "reservoir", random.Random(0))
    again.load(json.loads(json.dumps(memory.state())))
    assert again.items == memory.items and again.logits == memory.logits  # exact round trip, ids included
    assert again.forget(["e1", "e3", "zz"]) == ["text 1", "text 3"]
    assert [ex.id for ex in again.items] == ["e0", "e2", "e4"] and again.logits == [[0.0], [0.2], [0.4]]
    old = ReplayMemory(10, 1.0, "reservoir", random.Random(0))
    old.load({"seen": 1, "buffer": [["old row", "a", None, None]]})  # a state written before ids
    assert old.items == [Example("old row", "a", None)] and old.forget(["x"]) == []


def test_holdout_forgets_by_id_and_the_gate_still_reads_it(tmp_path):
    """Held-out samples kept texts forever in every retained version's holdout.json."""
    h = Holdout(every=1, per_domain=2, recent=5)
    for i in range(4):
        h.take(Example(f"held {i}", "a", "d", f"h{i}"))
    assert h.forget(["h0", "h3"]) == ["held 0", "held 3"]
    h.save(tmp_path)
    again = Holdout(every=1, per_domain=2, recent=5)
    again.load(tmp_path)
    assert again.samples == {"d": [("held 1", "a")]} and again.ids("d") == ["h1"]
    assert [r[0] for r in again.recent] == ["held 2"]
    assert sorted(r[0] for r in gate_rows(tmp_path)) == ["held 1", "held 2"]


def test_joiner_pending_state_forgets_ids():
    """The joiner checkpoint kept pending texts of an id after its owner asked to be forgotten."""
    state = JoinState(ttl_s=60, max_pending=100)
    state.add_text(TextEvent(id="t1", text="secret one"), now=0)
    state.add_text(TextEvent(id="t2", text="kept"), now=0)
    state.add_feedback(FeedbackEvent(id="f1", label="a"), now=0, where=("x", 0, 1))
    saved = state.to_json()
    assert state.forget(["t1", "f1"]) == 2
    assert "secret one" not in json.dumps(state.to_json()) and "kept" in json.dumps(state.to_json())
    assert "secret one" not in json.dumps(JoinState.forget_json(saved, ["t1"]))


def test_ids_are_bounded_and_validated():
    """An erasure request of any size or shape was not refused."""
    assert check_ids(["a", "b", "a"]) == ["a", "b"]
    for bad in ([], ["x"] * 0 + [str(i) for i in range(1001)], [""], ["x" * 257], [3], ["a\nb"]):
        with pytest.raises(ValueError):
            check_ids(bad)


def test_scrub_takes_rows_of_ids_and_their_texts_everywhere():
    """A text could stay in a strategy's window after its memory row went."""
    state = {
        "buffer": [["secret", "a", None, [0.1], "e1"], ["other", "a", None, None, "e2"]],
        "window": [["secret", "a", None], ["fine", "b", "d"]],
        "labels": ["a", "b", "e1"],  # a list of names is not a row of an id
    }
    cleaned, found = scrub(state, {"e1"}, set())
    assert found == {"secret"} and ["secret", "a", None] in cleaned["window"]
    cleaned, _ = scrub(cleaned, {"e1"}, found)
    assert "secret" not in json.dumps(cleaned) and cleaned["labels"] == ["a", "b", "e1"]


class RowsLearner(Learner):
    """A learner whose whole state is a replay memory and a window of rows (as strategies keep)."""

    name = "rows"

    def __init__(self, model=None) -> None:
        self.model = model
        self.memory = ReplayMemory(100, 1.0, "reservoir", random.Random(0))
        self.window: list[list[object]] = []

    def learn(self, batch):
        self.memory.extend(list(batch))
        self.window = [[ex.text, ex.label, ex.domain] for ex in batch]
        return [None] * len(batch)

    def save_state(self, folder: Path) -> None:
        (folder / "rows.json").write_text(json.dumps({**self.memory.state(), "window": self.window}))

    def load_state(self, folder: Path) -> None:
        state = json.loads((folder / "rows.json").read_text())
        self.memory.load(state)
        self.window = state["window"]


def test_forget_state_reaches_every_copy_in_a_learner_and_its_holdout(tmp_path):
    """Replay buffers, strategy windows and held-out samples kept the texts of an erased id."""
    learner, holdout = RowsLearner(), Holdout(every=2, per_domain=10)
    batch = [Example(f"text {i}", "a", None, f"e{i}") for i in range(6)]
    learner.learn([ex for ex in batch if not holdout.take(ex)])
    texts = forget_state(learner, holdout, ["e0", "e1", "e5"])
    assert texts == {"text 0", "text 1", "text 5"}
    learner.save_state(tmp_path)
    holdout.save(tmp_path)
    raw = (tmp_path / "rows.json").read_text() + (tmp_path / HOLDOUT_FILE).read_text()
    assert not any(t in raw for t in texts) and "text 2" in raw and "text 3" in raw


def _version(reg: LocalRegistry, texts: list[str], ids: list[str], parent: int | None = None) -> int:
    def write(folder: Path) -> NewVersion:
        (folder / "weights.bin").write_bytes(b"w")
        (folder / HOLDOUT_FILE).write_text(json.dumps({"samples": {"d": [[t, "a"] for t in texts]}}))
        (folder / "rows.json").write_text(json.dumps({"buffer": [[t, "a", None, None] for t in texts]}))
        (folder / "rows.bin").write_bytes(b"tensors")
        (folder / LINEAGE_FILE).write_text(json.dumps({"trained": ids, "held_out": []}))
        return NewVersion(parent=parent, state_files=["rows.bin", "rows.json"])

    return reg.create(write, NewVersion()).version


@pytest.mark.parametrize("signed", [False, True])
def test_retained_versions_lose_the_files_that_hold_an_erased_text_and_stay_valid(tmp_path, signed):
    """Older retained versions kept holdout.json and replay state with erased texts."""
    reg = LocalRegistry(tmp_path, signing_key=KEY if signed else None)
    v1 = _version(reg, ["a clean text"], ["c1"])
    v2 = _version(reg, ["a clean text", "secret text"], ["s1"], v1)
    v3 = _version(reg, ["a clean text"], [], v2)  # the version the erasure wrote
    dropped = erase_retained(reg, {"secret text"}, skip=v3)
    assert dropped == {v2: [HOLDOUT_FILE, "rows.bin", "rows.json"]}
    again = LocalRegistry(tmp_path, signing_key=KEY if signed else None)  # checksums and signatures hold
    for v in (v1, v2, v3):
        folder = again.local_path(v)
        assert all("secret text" not in p.read_text(errors="ignore") for p in folder.iterdir() if p.is_file())
    assert again.meta(v2).dropped == [HOLDOUT_FILE, "rows.bin", "rows.json"]
    assert trained_in(again, ["s1", "c1", "zz"]) == {
        "trained": {"s1": [v2], "c1": [v1]},
        "held_out": {},
        "versions": [v1, v2],
    }
