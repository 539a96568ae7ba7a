"""The frozen layers' outputs are computed once per text and give the model's own answers."""

from __future__ import annotations

import pytest
import torch

from learners.frozen import FrozenCache, frozen_fingerprint
from learners.model import TextClassifier

TEXTS = ["the food was great", "awful service, never again", "ok", "a long " * 30 + "text", "the food was great"]


@pytest.fixture(scope="module")
def model() -> TextClassifier:
    torch.manual_seed(0)
    m = TextClassifier.from_encoder(None, ["pos", "neg", "mixed"], max_length=48)
    m.use_stats_head(4, 1.0)
    with torch.no_grad():
        assert m.stats_head is not None
        m.stats_head.weight.normal_()
        m.stats_head.bias.zero_()
        m.head.weight.normal_()
    return m


def test_same_answers_as_the_whole_model(model: TextClassifier) -> None:
    cache = FrozenCache(batch=3)
    whole = model.predict(TEXTS)
    cached = cache.predict(model, TEXTS)
    again = cache.predict(model, TEXTS)
    for a, b, c in zip(whole, cached, again):
        assert a.label == b.label == c.label
        for label in model.labels:
            assert b.scores[label] == pytest.approx(a.scores[label], abs=1e-4)
            assert c.scores[label] == b.scores[label]
    assert cache.misses == 4  # each distinct text once
    assert cache.hits == len(TEXTS) * 2 - 4


def test_another_top_reuses_the_states_a_different_bottom_does_not(model: TextClassifier) -> None:
    import copy

    cache = FrozenCache()
    cache.predict(model, TEXTS[:2])
    top = copy.deepcopy(model)
    with torch.no_grad():
        top.encoder.encoder.layer[5].output.dense.weight.mul_(1.5)  # a trained top layer
    assert frozen_fingerprint(top, 4) == frozen_fingerprint(model, 4)
    cached = cache.predict(top, TEXTS[:2])
    assert cache.misses == 2  # the new top read the states of the first model's bottom
    for a, b in zip(top.predict(TEXTS[:2]), cached):
        assert a.label == b.label
    bottom = copy.deepcopy(model)
    with torch.no_grad():
        bottom.encoder.encoder.layer[0].output.dense.weight.mul_(1.5)
    assert frozen_fingerprint(bottom, 4) != frozen_fingerprint(model, 4)
    cache.predict(bottom, TEXTS[:2])
    assert cache.misses == 4


def test_bounded(model: TextClassifier) -> None:
    cache = FrozenCache(max_texts=2)
    cache.predict(model, TEXTS[:4])
    assert len(cache._states) == 2


def test_without_statistics_the_model_is_scored_whole() -> None:
    plain = TextClassifier.from_encoder(None, ["a", "b"], max_length=16)
    cache = FrozenCache()
    assert cache.depth(plain) == 0
    assert [p.label for p in cache.predict(plain, TEXTS)] == [p.label for p in plain.predict(TEXTS)]


def test_an_int8_copy_is_scored_whole(model: TextClassifier) -> None:
    """Packed (quantized) frozen layers cannot be fingerprinted: the copy is scored whole, as served."""
    from learners.quantize import served_copy

    served = served_copy(model, "int8")
    cache = FrozenCache()
    assert cache.depth(served) == 0
    assert [p.label for p in cache.predict(served, TEXTS)] == [p.label for p in served.predict(TEXTS)]
