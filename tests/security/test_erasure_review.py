"""Erasure by id, after a review of the first version (issue 15, point 4): older versions, ids that
come back, and the rows of a strategy's window."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from learners.base import Example, Learner
from learners.dedupe import DEDUPE_FILE, SeenIds, seen_at
from learners.erasure import ERASED, erase_retained, forget_state
from learners.evaluation import HOLDOUT_FILE, Holdout
from learners.memory import ReplayMemory
from learners.registry import LINEAGE_FILE, LocalRegistry, NewVersion
from learners.service import LearnerService
from services._forget import forget
from streaming.events import LabeledExample


class RowsLearner(Learner):
    """A learner whose whole state is a replay memory (as strategies keep)."""

    name = "rows"

    def __init__(self, model: Any = None) -> None:
        self.model = model
        self.memory = ReplayMemory(100, 1.0, "reservoir", random.Random(0))

    def learn(self, batch: Any) -> list[Any]:
        self.memory.extend(list(batch))
        return [None] * len(batch)

    def save_state(self, folder: Path) -> None:
        (folder / "replay.json").write_text(json.dumps(self.memory.state()))

    def load_state(self, folder: Path) -> None:
        self.memory.load(json.loads((folder / "replay.json").read_text()))


def _version(reg: LocalRegistry, replay: list[list[Any]], holdout: dict[str, Any], parent: int | None = None) -> int:
    def write(folder: Path) -> NewVersion:
        (folder / "weights.bin").write_bytes(b"w")
        (folder / HOLDOUT_FILE).write_text(json.dumps(holdout))
        (folder / "replay.json").write_text(json.dumps({"seen": 3, "buffer": replay}))
        (folder / LINEAGE_FILE).write_text(json.dumps({"trained": ["s1", "s2"], "held_out": []}))
        return NewVersion(parent=parent, state_files=["replay.json"])

    return reg.create(write, NewVersion()).version


def _texts_left(reg: LocalRegistry, texts: list[str]) -> list[str]:
    again = LocalRegistry(reg.root)
    return [
        f"{m.version}/{p.name}"
        for m in again.versions()
        for p in again.local_path(m.version).iterdir()
        if p.is_file() and any(t in p.read_text(errors="ignore") for t in texts)
    ]


def test_retained_versions_are_searched_by_id_when_the_live_state_no_longer_holds_the_text(tmp_path):
    """forget looked for texts only in the live state: a text a buffer had dropped stayed in older versions."""
    reg = LocalRegistry(tmp_path)
    clean = {"samples": {"d": [["clean", "a", "c1"]]}, "recent": []}
    v1 = _version(reg, [["secret one", "a", None, [0.1], "s1"]], clean)  # replay row with its id
    held = {"samples": {"d": [["secret two", "a", "s2"]]}, "recent": [["secret three", "a", "d", "s3"]]}
    v2 = _version(reg, [["clean", "a", None, None, "c1"]], held, v1)  # held-out rows with their ids
    v3 = _version(reg, [["clean", "a", None, None, "c1"]], clean, v2)  # the erasure's own version
    texts: set[str] = set()
    dropped = erase_retained(reg, texts, skip=v3, ids=["s1", "s2", "s3"])
    assert texts == {"secret one", "secret two", "secret three"}
    assert dropped == {v1: ["replay.json"], v2: [HOLDOUT_FILE]}
    assert _texts_left(reg, sorted(texts)) == []


def test_the_erasure_reports_and_removes_texts_found_only_in_an_older_version(tmp_path):
    """forget(id) of an example the reservoir had replaced answered texts_found 0 and kept version N's copy."""
    reg = LocalRegistry(tmp_path)
    v1 = _version(reg, [["secret", "a", None, None, "s1"]], {"samples": {}})
    learner, holdout = RowsLearner(), Holdout(every=1, per_domain=5)
    learner.memory.load({"seen": 1, "buffer": [["secret", "a", None, None]]})  # the same text, no id (old row)
    versions = SimpleNamespace(seen=SeenIds(10), lineage={})

    def write_version(note: str) -> Any:
        def write(folder: Path) -> NewVersion:
            learner.save_state(folder)
            holdout.save(folder)
            return NewVersion(parent=v1, note=note)

        return reg.create(write, NewVersion())

    service = SimpleNamespace(
        learner=learner, holdout=holdout, registry=reg, versions=versions, write_version=write_version
    )
    answer = LearnerService.erase(service, ["s1"])  # type: ignore[arg-type]
    assert answer["texts_found"] == 1 and answer["dropped"] == {v1: ["replay.json"]}
    assert _texts_left(reg, ["secret"]) == [] and versions.lineage[ERASED] == ["s1"]
    assert versions.seen.is_erased("s1") and "s1" in versions.seen


def test_erased_ids_are_kept_by_name_in_every_version_beyond_the_dedupe_window(tmp_path):
    """Erased ids were not remembered: a record of one still unread in streamcl.labeled was trained after."""
    from learners.dedupe import ERASED_FILE

    seen = SeenIds(2)
    seen.erase(["gone"])
    seen.add(["a", "b", "c"])  # the window forgets "gone"'s hash
    assert "gone" not in seen and seen.is_erased("gone")
    seen.save(tmp_path)
    assert json.loads((tmp_path / ERASED_FILE).read_text()) == ["gone"] and (tmp_path / DEDUPE_FILE).is_file()
    again = seen_at(None, None, tmp_path, 2)  # type: ignore[arg-type]  # the file is there: no lineage read
    assert again.is_erased("gone") and not again.is_erased("a")
    again.clear()  # a new broker: taken ids start over, erased ones stay
    assert again.is_erased("gone")
    empty = tmp_path / "none"
    empty.mkdir()
    SeenIds(2).save(empty)
    assert not (empty / ERASED_FILE).exists()  # no erasure, no new file in the version


def test_an_erased_id_read_again_is_never_trained_and_is_listed(tmp_path):
    """An erased id could be trained again: the learner's duplicate check did not know erased ids."""
    from learners.erasure import REFUSED

    seen = SeenIds(100)
    seen.add(["old"])
    seen.erase(["gone"])
    seen.clear()  # even once its hash left the window
    versions = SimpleNamespace(seen=seen, lineage={})
    batch = [LabeledExample(id=i, text=f"text {i}", label="a") for i in ("gone", "new", "gone", "new")]
    kept, duplicates = LearnerService._split_duplicates(SimpleNamespace(versions=versions), batch)  # type: ignore[arg-type]
    assert [ev.id for ev in kept] == ["new"] and duplicates == ["new"]
    assert versions.lineage == {REFUSED: ["gone", "gone"]}


def test_the_joiners_erase_first_and_always_even_when_the_learner_fails(tmp_path):
    """A learner timeout answered 503 before any joiner erased, and the learner erased before the joiners."""
    reg = LocalRegistry(tmp_path)
    calls: list[str] = []

    def joiner(name: str) -> Any:
        def call(ids: list[str]) -> dict[str, Any]:
            calls.append(name)
            if name == "j2":
                raise RuntimeError("down")
            return {"dropped": len(ids)}

        return call

    def learner(ids: list[str]) -> dict[str, Any]:
        calls.append("learner")
        raise TimeoutError

    answer = forget(["x"], "m", reg, learner, [joiner("j1"), joiner("j2")])
    assert calls == ["j1", "j2", "learner"]
    assert answer["status"] == 503 and answer["joiners"] == [{"dropped": 1}, {"error": "RuntimeError: down"}]
    assert "1 of 2 joiners" in answer["detail"]
    calls.clear()
    answer = forget(["x"], "m", reg, None, [joiner("j1")])
    assert calls == ["j1"] and answer["status"] == 503 and answer["joiners"] == [{"dropped": 1}]
    calls.clear()
    answer = forget(["x"], "m", reg, lambda ids: calls.append("learner") or {"version": 2}, [joiner("j1")])
    assert calls == ["j1", "learner"] and answer["learner"] == {"version": 2} and "error" not in answer


@pytest.fixture(scope="module")
def der() -> Learner:
    """A one-layer DER learner with a window of 8 and a batch in its window."""
    import torch

    from learners.model import TextClassifier, truncate_layers
    from learners.settings import LearnerSettings
    from learners.strategies import build_learner

    torch.set_num_threads(1)
    model = TextClassifier.from_encoder(None, [], max_length=16)
    truncate_layers(model.encoder, 1)
    settings = LearnerSettings(
        strategy="der", max_length=16, trainable_layers=1, batch_size=4, window=8, replay_buffer=8, seed=7
    )
    learner = build_learner(settings, model)
    learner.learn([Example(f"window text {i}", "ab"[i % 2], "d", f"w{i}") for i in range(4)])
    return learner


def test_a_strategy_window_keeps_ids_and_erasure_finds_rows_by_them(der, tmp_path):
    """Avalanche windows were saved without ids: an id only in the window answered texts_found 0."""
    from safetensors.torch import load_file

    der.save_state(tmp_path)
    window = json.loads((tmp_path / "avalanche.json").read_text())["window"]
    assert [r[3] for r in window] == ["w0", "w1", "w2", "w3"]
    texts = forget_state(der, Holdout(every=1, per_domain=5), ["w1"])
    assert texts == {"window text 1"}
    assert [it.example.id for it in der._window] == ["w0", "w2", "w3"]  # the round trip keeps ids
    out = tmp_path / "after"
    out.mkdir()
    der.save_state(out)
    assert "window text 1" not in (out / "avalanche.json").read_text()
    before, after = load_file(str(tmp_path / "avalanche.safetensors")), load_file(str(out / "avalanche.safetensors"))
    assert after["der.window.logits"].shape[0] == 3  # DER's recorded logits follow the window's rows
    assert after["der.window.logits"].tolist() == before["der.window.logits"][[0, 2, 3]].tolist()


def test_window_rows_written_before_ids_still_load(der, tmp_path):
    """Old three-element window rows must load (no id) after ids were added."""
    der.save_state(tmp_path)
    state = json.loads((tmp_path / "avalanche.json").read_text())
    state["window"] = [r[:3] for r in state["window"]]
    del state["window_ids"]
    (tmp_path / "avalanche.json").write_text(json.dumps(state))
    der.load_state(tmp_path)
    assert [it.example.id for it in der._window] == [None] * len(state["window"])
