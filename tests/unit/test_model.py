import torch

from learners.base import Example
from learners.finetune import FineTuneLearner
from learners.model import TextClassifier

TEXTS = ["great service, thank you", "the worst delay ever"]


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    model = TextClassifier.from_encoder(None, ["pos", "neg"], max_length=32)
    model.save(tmp_path)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))  # no pickles
    again = TextClassifier.load(tmp_path)
    assert again.labels == ["pos", "neg"]
    a, b = model.predict(TEXTS), again.predict(TEXTS)
    assert [p.label for p in a] == [p.label for p in b]
    assert all(abs(x.scores[k] - y.scores[k]) < 1e-5 for x, y in zip(a, b) for k in x.scores)


def test_head_grows_without_touching_old_rows():
    model = TextClassifier.from_encoder(None, ["pos"], max_length=32)
    old = model.head.weight.detach().clone()
    assert model.grow(["neg", "pos", "neu"]) == ["neg", "neu"]
    assert model.labels == ["pos", "neg", "neu"]
    assert torch.equal(model.head.weight[:1], old)
    assert model.grow(["pos"]) == []


def test_no_labels_means_null_predictions():
    model = TextClassifier.from_encoder(None, [], max_length=32)
    assert [p.label for p in model.predict(TEXTS)] == [None, None]


def test_learner_predicts_before_training_and_learns_new_labels():
    torch.manual_seed(0)
    model = TextClassifier.from_encoder(None, [], max_length=32)
    learner = FineTuneLearner(model, trainable_layers=1)
    batch = [Example("I love it", "pos"), Example("I hate it", "neg")]
    assert learner.learn(batch) == [None, None]  # nothing known before the first batch
    assert model.labels == ["pos", "neg"]
    for _ in range(15):
        preds = learner.learn(batch)
    assert preds == ["pos", "neg"]
    frozen = [p for n, p in model.encoder.named_parameters() if "layer.0." in n]
    assert frozen and not any(p.requires_grad for p in frozen)
