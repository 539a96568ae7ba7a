"""The contract every strategy keeps, run over every registered strategy (``learners.strategies``,
plus class-balanced replay, plus ``tiny``, registered below as a new strategy file would be):
prequential predictions, a head that grows, checkpoints that round-trip, determinism under a
seed, clone, and no pickle in the saved state."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, Field, ValidationError
from safetensors.torch import load_file

from learners.base import Example, Learner
from learners.model import TextClassifier, truncate_layers
from learners.settings import LearnerSettings
from learners.strategies import build_learner, fine_tune_args, names, register, unregister


class TinySettings(BaseModel):
    """A new strategy's own settings, declared in its file."""

    tiny_head_lr: float = Field(0.01, gt=0, description="tiny: head learning rate")


def _build_tiny(settings: LearnerSettings, model: TextClassifier) -> Learner:
    from learners.finetune import FineTuneLearner

    own = TinySettings.model_validate(settings, from_attributes=True)
    return FineTuneLearner(model, **{**fine_tune_args(settings), "head_lr": own.tiny_head_lr})


# What a new file in learners/strategies/ does; the cases below pick it up with the others.
register("tiny", _build_tiny, TinySettings)
STRATEGIES = names()


@pytest.fixture(scope="module", autouse=True)
def _unregister_tiny() -> Iterator[None]:
    yield
    unregister("tiny")


#: Small everything: 1 encoder layer, 16 tokens, 4 examples a batch, 8 an experience.
SMALL: dict[str, Any] = {
    "max_length": 16,
    "trainable_layers": 1,
    "batch_size": 4,
    "window": 8,
    "replay_buffer": 8,
    "agem_memory": 8,
    "agem_sample": 4,
    "gem_memory": 8,
    "gem_groups": 2,
    "seed": 7,
}
CASES = [pytest.param(name, "reservoir", id=name) for name in STRATEGIES] + [
    pytest.param(name, "class_balanced", id=f"{name}-class_balanced") for name in ("replay", "er-ace", "der")
]
WORDS = {"pos": "great lovely fine", "neg": "awful broken late", "neu": "okay average plain"}
PROBE = ["a lovely day", "broken again", "plain and okay"]


def _batch(k: int, labels: tuple[str, ...] = ("pos", "neg")) -> list[Example]:
    return [
        Example(f"{WORDS[label].split()[i % 3]} item {k}-{i}", label, "shop" if k % 2 else "news")
        for i, label in enumerate(labels[i % len(labels)] for i in range(4))
    ]


def _stream(n: int, start: int = 0) -> list[list[Example]]:
    return [_batch(k) for k in range(start, start + n)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the learner process runs: on shared cores more threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer MiniLM classifier with no labels yet, saved once."""
    model = TextClassifier.from_encoder(None, [], max_length=16)
    truncate_layers(model.encoder, 1)
    folder = tmp_path_factory.mktemp("base")
    model.save(folder)
    return folder


def _settings(strategy: str, policy: str, **over: Any) -> LearnerSettings:
    return LearnerSettings(strategy=strategy, replay_policy=policy, **{**SMALL, **over})  # type: ignore[arg-type]


def _fresh(base: Path, strategy: str, policy: str = "reservoir", **over: Any) -> Learner:
    return build_learner(_settings(strategy, policy, **over), TextClassifier.load(base))


def _weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def _logits(learner: Learner, texts: list[str]) -> torch.Tensor:
    model = learner.model
    return model(**model.tokenize(texts))


@pytest.mark.parametrize(("strategy", "policy"), CASES)
def test_learn_predicts_before_training_with_the_labels_known_then(base, strategy, policy):
    learner = _fresh(base, strategy, policy)
    assert learner.learn(_batch(0)) == [None] * 4  # nothing known before the first batch
    assert learner.model.labels == ["pos", "neg"]
    bigger = _batch(6) + _batch(7, ("neu", "pos"))  # more than a training step takes
    for batch in [*_stream(3, 1), _batch(4, ("neu", "pos")), _batch(5, ("neu", "neg")), bigger]:
        known = set(learner.model.labels)
        before = learner.predict([ex.text for ex in batch])  # the model before the step
        preds = learner.learn(batch)
        assert preds == before
        assert all(p in known for p in preds)  # never a label first seen in this batch
    assert learner.model.labels == ["pos", "neg", "neu"]
    assert learner.learn([]) == []


@pytest.mark.parametrize(("strategy", "policy"), CASES)
def test_checkpoint_round_trip_resumes_where_it_stopped(base, strategy, policy, tmp_path):
    learner = _fresh(base, strategy, policy)
    for batch in [*_stream(3), _batch(3, ("neu", "pos")), _batch(4)]:  # ends mid-experience
        learner.learn(batch)
    learner.model.save(tmp_path)
    learner.save_state(tmp_path)

    again = build_learner(_settings(strategy, policy), TextClassifier.load(tmp_path))
    again.load_state(tmp_path)
    assert again.predict(PROBE) == learner.predict(PROBE)
    assert torch.equal(_logits(again, PROBE), _logits(learner, PROBE))
    assert again.learn(_batch(5)) == learner.learn(_batch(5))  # the same model before the step
    assert learner.exact_resume
    assert _same(_weights(again), _weights(learner))
    for batch in _stream(3, 6):  # closes the open experience and starts the next one
        assert again.learn(batch) == learner.learn(batch)
        assert _same(_weights(again), _weights(learner))  # moments, memories, anchors, random state


@pytest.mark.parametrize(("strategy", "policy"), CASES)
def test_the_same_seed_gives_the_same_result(base, strategy, policy):
    stream = [*_stream(3), _batch(3, ("neu", "pos")), *_stream(2, 4)]
    runs = []
    for _ in range(2):  # one after the other: naive and replay seed torch's global generator
        learner = _fresh(base, strategy, policy)
        runs.append(([learner.learn(batch) for batch in stream], _weights(learner)))
    assert runs[0][0] == runs[1][0]
    assert _same(runs[0][1], runs[1][1])


@pytest.mark.parametrize(("strategy", "policy"), CASES)
def test_clone_is_a_fresh_learner_with_the_same_settings(base, strategy, policy, tmp_path):
    learner = _fresh(base, strategy, policy)
    for batch in _stream(5):
        learner.learn(batch)
    runs = []
    for kind in ("clone", "fresh"):  # nothing learned came along: it saves and learns like a new one
        other = learner.clone(TextClassifier.load(base)) if kind == "clone" else _fresh(base, strategy, policy)
        assert type(other) is type(learner) and other.name == learner.name
        assert other.params() == learner.params()
        assert other.model is not learner.model
        (tmp_path / kind).mkdir()
        other.save_state(tmp_path / kind)
        files = {p.name: p.read_bytes() for p in (tmp_path / kind).iterdir()}
        runs.append((files, other.learn(_batch(0)), _weights(other)))
    (clone_files, clone_preds, clone_weights), (fresh_files, fresh_preds, fresh_weights) = runs
    assert clone_files == fresh_files
    assert clone_preds == fresh_preds
    assert _same(clone_weights, fresh_weights)


@pytest.mark.parametrize(("strategy", "policy"), CASES)
def test_new_labels_grow_the_head_without_touching_the_old_classes(base, strategy, policy):
    learner = _fresh(base, strategy, policy)
    for batch in _stream(3):
        learner.learn(batch)
    model = learner.model
    seen: dict[str, Any] = {}
    grow = model.grow

    def watched(labels: list[str]) -> list[str]:
        seen["rows"], seen["logits"] = model.head.weight.detach().clone(), _logits(learner, PROBE)
        new = grow(labels)
        seen["grown"], seen["after"] = model.head.weight.detach().clone(), _logits(learner, PROBE)
        return new

    model.grow = watched  # type: ignore[method-assign]
    learner.learn(_batch(3, ("neu", "pos")))
    old = seen["rows"].shape[0]
    assert old == 2 and seen["grown"].shape[0] == 3 and model.labels == ["pos", "neg", "neu"]
    assert torch.equal(seen["grown"][:old], seen["rows"])
    assert torch.equal(seen["after"][:, :old], seen["logits"])
    # the new row is trained from the step that brought its label (the optimizer has it)
    assert not torch.equal(model.head.weight[old:].detach(), seen["grown"][old:])
    for batch in _stream(3, 4):  # and the strategy keeps going with the grown head
        learner.learn(batch)


@pytest.mark.parametrize(("strategy", "policy"), CASES)
def test_state_is_json_and_safetensors_only(base, strategy, policy, tmp_path):
    learner = _fresh(base, strategy, policy)
    learner.load_state(tmp_path)  # an empty folder: starts fresh
    for batch in _stream(5):
        learner.learn(batch)
    learner.save_state(tmp_path)
    for path in tmp_path.iterdir():
        assert path.suffix in {".json", ".safetensors"}, path.name
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        else:
            load_file(str(path))


@pytest.mark.parametrize("strategy", ["ewc", "si", "mas", "lwf", "agem", "gem", "der", "replay-lwf"])
def test_every_avalanche_strategy_trains_differently_from_plain_fine_tuning(base, strategy):
    """Their penalty, projection or replay acts once an experience has closed (a new label
    midway brings the interference A-GEM's and GEM's projections act on)."""
    plain, other = _fresh(base, "naive"), _fresh(base, strategy)
    for batch in [*_stream(3), _batch(3, ("neu", "neg")), *_stream(2, 4)]:
        plain.learn(batch)
        other.learn(batch)
    assert not _same(_weights(plain), _weights(other))


@pytest.mark.parametrize(("strategy", "key"), [("der", "der"), ("agem", "agem"), ("replay-lwf", "replay")])
def test_every_memory_is_the_one_replay_memory_bounded_and_saved_as_json_rows(base, strategy, key, tmp_path):
    learner = _fresh(base, strategy, "class_balanced", replay_fraction=1.0)
    for batch in [*_stream(4), _batch(4, ("neu", "neu")), *_stream(3, 5)]:
        learner.learn(batch)
    learner.save_state(tmp_path)
    state = json.loads((tmp_path / "avalanche.json").read_text(encoding="utf-8"))
    memory = state["components"][key]
    assert set(memory) == {"seen", "group_seen", "buffer"} and state["memory_rng"]
    assert 0 < len(memory["buffer"]) <= 8  # replay_buffer, agem_memory
    assert all(len(row) == 4 for row in memory["buffer"])  # text, label, domain, logits
    assert {row[1] for row in memory["buffer"]} == {"pos", "neg", "neu"}  # balanced: the rare label kept
    assert all((row[3] is not None) == (strategy == "der") for row in memory["buffer"])


def test_a_registered_strategy_is_built_by_name_with_its_own_settings(base):
    learner = build_learner(LearnerSettings(strategy="tiny", **SMALL), TextClassifier.load(base))
    assert learner.params()["head_lr"] == 0.01 and learner.params()["seed"] == SMALL["seed"]
    assert "tiny" in STRATEGIES
    with pytest.raises(ValueError, match="already registered"):
        register("tiny", _build_tiny)


def test_unknown_strategies_and_bad_hyperparameters_are_refused_with_the_valid_values():
    with pytest.raises(ValidationError) as err:
        LearnerSettings(strategy="magic")  # type: ignore[arg-type]
    assert all(f"'{name}'" in str(err.value) for name in STRATEGIES)
    with pytest.raises(ValidationError, match="reservoir"):
        LearnerSettings(replay_policy="fifo")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ewc_decay"):
        LearnerSettings(ewc_decay=2)
    with pytest.raises(ValidationError, match="agem_sample"):
        LearnerSettings(agem_memory=8, agem_sample=16)
    with pytest.raises(ValidationError, match="gem_groups"):
        LearnerSettings(gem_memory=2, gem_groups=4)


def test_start_up_does_not_import_avalanche():
    code = "import sys, services.cli, learners.service; sys.exit('avalanche' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_settings_read_every_strategy_without_torch():
    code = "import sys, learners.settings; sys.exit('torch' in sys.modules or 'avalanche' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    assert {"ewc_lambda", "der_alpha", "agem_sample", "replay_logit_alpha"} <= set(LearnerSettings.model_fields)
