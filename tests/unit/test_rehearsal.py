"""The rehearsal learners: a buffer bounded by size and by a share of the stream, the replay
share of each step, ER-ACE's asymmetric loss, and a saved state that resumes exactly."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from learners.base import Example
from learners.memory import ReplayMemory
from learners.model import TextClassifier
from learners.rehearsal import ERACELearner, ReplayLearner


def _batch(start: int, n: int, domain: str, labels: tuple[str, ...] = ("neg", "pos")) -> list[Example]:
    return [Example(f"{domain} text number {i}", labels[i % len(labels)], domain) for i in range(start, start + n)]


def _examples(label: str, n: int) -> list[Example]:
    return [Example(f"{label} {i}", label) for i in range(n)]


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
def test_the_buffer_never_holds_more_than_its_share_of_the_stream_nor_its_size(policy):
    buffer = ReplayMemory(size=50, fraction=0.1, policy=policy, rng=random.Random(0))
    for i, ex in enumerate(_examples("a", 300) + _examples("b", 300) + _examples("c", 300), start=1):
        buffer.add(ex)
        assert len(buffer) <= min(50, i // 10)
    assert len(buffer) == 50 and buffer.seen == 900


def test_class_balanced_keeps_an_equal_share_per_label_and_reservoir_a_uniform_sample():
    balanced = ReplayMemory(30, 1.0, "class_balanced", random.Random(0))
    reservoir = ReplayMemory(30, 1.0, "reservoir", random.Random(0))
    for buffer in (balanced, reservoir):
        for ex in _examples("a", 600) + _examples("b", 60) + _examples("c", 6):
            buffer.add(ex)
    assert Counter(ex.label for ex in balanced.items) == {"a": 12, "b": 12, "c": 6}
    assert Counter(ex.label for ex in reservoir.items)["a"] > 20  # 90% of the stream is "a"


def test_unknown_policy_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="reservoir, class_balanced"):
        ReplayMemory(10, 0.1, "fifo", random.Random(0))


def test_each_step_replays_the_ratio_on_average_and_predicts_only_the_new_examples():
    model = TextClassifier.from_encoder(None, ["neg", "pos"], 16)
    learner = ReplayLearner(model, buffer_size=40, buffer_fraction=0.5, replay_ratio=0.25, trainable_layers=0)
    steps = []
    original = learner._step
    learner._step = lambda batch, extra: steps.append(len(extra)) or original(batch, extra)  # type: ignore[method-assign]
    for k in range(20):
        assert len(learner.learn(_batch(8 * k, 8, "a" if k < 10 else "b"))) == 8
    assert steps[0] == 0 and sum(steps[1:]) / len(steps[1:]) == pytest.approx(2.0, abs=0.6)
    assert len(learner._buffer) == 40
    assert {ex.domain for ex in learner._buffer.items} == {"a", "b"}  # old and new both kept


def test_er_ace_new_examples_do_not_push_down_labels_absent_from_their_batch():
    model = TextClassifier.from_encoder(None, ["a", "b", "c"], 16)
    learner = ERACELearner(model, trainable_layers=0)
    logits = torch.zeros(4, 3, requires_grad=True)
    target = torch.tensor([2, 2, 0, 1])  # two new examples of "c", two replayed ones of "a" and "b"
    learner._objective(logits, target, n_new=2).backward()
    grad = logits.grad
    assert grad is not None
    assert torch.equal(grad[:2, :2], torch.zeros(2, 2))  # new rows: "a" and "b" untouched
    assert (grad[:2, 2] == 0).all()  # a one-label batch has nothing to compete with
    assert (grad[2:] != 0).all()  # replayed rows compete against every label
    # plain replay's cross-entropy pushes the absent labels down on new examples too
    plain = ReplayLearner(TextClassifier.from_encoder(None, ["a", "b", "c"], 16), trainable_layers=0)
    logits.grad = None
    plain._objective(logits, target, n_new=2).backward()
    assert (logits.grad[:2, :2] > 0).all()


@pytest.mark.parametrize("factory", [ReplayLearner, ERACELearner])
def test_saved_state_resumes_the_buffer_and_the_random_stream(tmp_path, factory):
    def fresh() -> ReplayLearner:
        model = TextClassifier.from_encoder(None, ["neg", "pos"], 16)
        return factory(model, buffer_size=20, buffer_fraction=0.5, trainable_layers=0, seed=3)

    learner = fresh()
    for k in range(6):
        learner.learn(_batch(8 * k, 8, "a" if k < 3 else "b"))
    learner.model.save(tmp_path)
    learner.save_state(tmp_path)
    again = factory(TextClassifier.load(tmp_path), buffer_size=20, buffer_fraction=0.5, trainable_layers=0, seed=3)
    again.load_state(tmp_path)
    assert again._buffer.items == learner._buffer.items and again._buffer.seen == 48
    for k in range(6, 9):
        batch = _batch(8 * k, 8, "c", ("neg", "pos", "neu"))
        assert again.learn(batch) == learner.learn(batch)
    assert again._buffer.items == learner._buffer.items
    for name, value in learner.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name


def test_replayed_examples_are_pulled_toward_the_logits_stored_with_them():
    model = TextClassifier.from_encoder(None, ["a", "b"], 16)
    learner = ReplayLearner(model, logit_alpha=2.0, trainable_layers=0)
    learner._replayed_logits = [[1.0, -1.0], None]  # the second replayed item has none stored
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 0, 1])
    loss = learner._objective(logits, target, n_new=1)
    plain = torch.nn.functional.cross_entropy(logits, target)
    assert loss.item() == pytest.approx(plain.item() + 2.0 * 1.0)  # mean of (1 - 0)^2 and (-1 - 0)^2
    assert torch.equal(learner._new_logits, logits[:1].detach())


def test_domain_class_balanced_keeps_an_equal_share_per_label_within_each_domain():
    buffer = ReplayMemory(24, 1.0, "domain_class_balanced", random.Random(0))
    for domain, n in (("old", 400), ("mid", 40), ("new", 8)):
        for i in range(n):
            buffer.add(Example(f"{domain} {i}", ("pos", "neg")[i % 2], domain))
    counts = Counter((ex.domain, ex.label) for ex in buffer.items)
    assert counts == {
        ("old", "pos"): 4,
        ("old", "neg"): 4,
        ("mid", "pos"): 4,
        ("mid", "neg"): 4,
        ("new", "pos"): 4,
        ("new", "neg"): 4,
    }
