"""The class-statistics discriminant (learners/classstats.py) and the model's statistics head."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from learners.base import Example
from learners.classstats import ClassStatistics, attach_class_stats, refresh_discriminant
from learners.model import TextClassifier
from learners.rehearsal import ERACELearner


def _gaussians(seed: int, labels: list[str], n: int = 40, dim: int = 8) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    centers = {label: torch.randn(dim, generator=g) * 4 for label in labels}
    xs, ys = [], []
    for label in labels:
        xs.append(centers[label] + torch.randn(n, dim, generator=g))
        ys += [label] * n
    return torch.cat(xs), ys


def test_the_discriminant_separates_classes_and_does_not_depend_on_order() -> None:
    x, y = _gaussians(0, ["a", "b", "c"])
    forward, shuffled = ClassStatistics(8), ClassStatistics(8)
    forward.add(x, y)
    order = list(range(len(y)))
    random.Random(1).shuffle(order)
    for i in range(0, len(order), 7):  # another order, in uneven pieces
        chunk = order[i : i + 7]
        shuffled.add(x[chunk], [y[j] for j in chunk])
    w1, b1 = forward.discriminant(["a", "b", "c"])
    w2, b2 = shuffled.discriminant(["a", "b", "c"])
    assert torch.allclose(w1, w2, atol=1e-4) and torch.allclose(b1, b2, atol=1e-3)
    pred = (x @ w1.T + b1).argmax(-1)
    truth = torch.tensor([["a", "b", "c"].index(label) for label in y])
    assert (pred == truth).float().mean() > 0.95


def test_a_label_without_statistics_is_never_chosen_and_rows_follow_the_asked_order() -> None:
    stats = ClassStatistics(8)
    x, y = _gaussians(2, ["a", "b"])
    stats.add(x, y)
    weight, bias = stats.discriminant(["b", "new", "a"])
    assert bias[1] == -1e4 and weight[1].abs().sum() == 0
    assert ((x @ weight.T + bias).argmax(-1) != 1).all()


def test_state_round_trip_keeps_every_sum(tmp_path: Path) -> None:
    stats = ClassStatistics(8, shrinkage=0.2)
    x, y = _gaussians(3, ["naïve\nlabel", "b"])
    stats.add(x, y)
    stats.calibrate(torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 0]))
    stats.save(tmp_path)
    back = ClassStatistics(8, shrinkage=0.2)
    assert back.load(tmp_path)
    assert back.labels == ["naïve\nlabel", "b"]
    for name in ("sums", "counts", "scatter", "nll"):
        assert torch.equal(getattr(back, name), getattr(stats, name))
    assert not ClassStatistics(16).load(tmp_path)  # another width: not this state
    assert not ClassStatistics(8).load(tmp_path / "missing")


def test_calibration_prefers_a_higher_temperature_for_overconfident_mistakes() -> None:
    stats = ClassStatistics(4)
    logits = torch.tensor([[30.0, 0.0]] * 10)
    target = torch.tensor([0] * 6 + [1] * 4)  # 60% right, at 100% confidence
    assert stats.calibrate(logits, target) > 8
    sharp = ClassStatistics(4)
    assert sharp.calibrate(torch.tensor([[30.0, 0.0]] * 10), torch.zeros(10, dtype=torch.long)) == 1.0


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    from learners.model import default_model_path

    return default_model_path()


def _learner(model: TextClassifier, weight: float = 1.0, layers: int = 2) -> ERACELearner:
    return ERACELearner(model, class_stats_weight=weight, trainable_layers=layers, seed=3)


_BATCH = [
    Example("a wonderful, moving film", "pos", "movies"),
    Example("dull and far too long", "neg", "movies"),
    Example("the striker scored twice", "sport", "news"),
    Example("x", "neg", "news"),  # one character
]


def test_the_model_serves_the_statistics_and_loads_them_back(tmp_path: Path, encoder_path: str) -> None:
    model = TextClassifier.from_encoder(encoder_path, [])
    learner = _learner(model)
    for _ in range(3):
        learner.learn(_BATCH)
    assert model.stats_head is not None and model.stats_layer == model.encoder_depth() - 2
    texts = ["what a film", "the match ended late"]
    before = model.predict(texts)
    model.save(tmp_path)
    info = json.loads((tmp_path / "classifier.json").read_text())
    assert info["stats"]["layer"] == model.stats_layer
    loaded = TextClassifier.load(tmp_path)
    assert loaded.predict(texts) == before


def test_a_resumed_learner_continues_exactly(tmp_path: Path, encoder_path: str) -> None:
    torch.manual_seed(0)
    a = _learner(TextClassifier.from_encoder(encoder_path, []))
    a.learn(_BATCH)
    a.model.save(tmp_path)
    a.save_state(tmp_path)
    b = _learner(TextClassifier.load(tmp_path))
    b.load_state(tmp_path)
    assert a.learn(_BATCH[::-1]) == b.learn(_BATCH[::-1])
    assert torch.equal(a._stats.scatter, b._stats.scatter)  # type: ignore[union-attr]
    assert a.model.predict(["a film"]) == b.model.predict(["a film"])


def test_no_statistics_without_a_frozen_layer_or_with_weight_zero(encoder_path: str) -> None:
    model = TextClassifier.from_encoder(encoder_path, [])
    assert attach_class_stats(model, -1, 1.0, 0.1) is None
    assert attach_class_stats(model, 2, 0.0, 0.1) is None
    assert model.stats_head is None
    learner = _learner(model, weight=0.0)
    learner.learn(_BATCH)
    assert model.stats_head is None and learner._stats is None


def test_labels_the_statistics_have_not_seen_make_the_discriminant_flat(encoder_path: str) -> None:
    """A learner resumed from a version without statistics must not push its old labels down."""
    model = TextClassifier.from_encoder(encoder_path, ["old", "pos"])
    stats = attach_class_stats(model, 2, 1.0, 0.1)
    assert stats is not None
    model(**model.tokenize(["a wonderful film"]))
    stats.add(model.frozen_pooled(), ["pos"])
    refresh_discriminant(model, stats)
    assert model.stats_head is not None
    assert model.stats_head.weight.abs().sum() == 0 and model.stats_head.bias.abs().sum() == 0


def test_hundreds_of_labels(encoder_path: str) -> None:
    model = TextClassifier.from_encoder(encoder_path, [])
    learner = _learner(model)
    for start in range(0, 300, 16):
        learner.learn([Example(f"text number {i}", f"label-{i}") for i in range(start, start + 16)])
    assert len(model.labels) == 304 and model.stats_head is not None
    assert model.stats_head.out_features == 304
    assert model.predict(["text number 5"])[0].label in model.labels
