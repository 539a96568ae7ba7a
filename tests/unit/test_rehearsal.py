"""The replay learner: a bounded reservoir, trained together with each batch, saved with the
version and resumed from it."""

from __future__ import annotations

from learners.base import Example
from learners.model import TextClassifier
from learners.rehearsal import ReplayLearner


def _batch(start: int, n: int, domain: str) -> list[Example]:
    return [Example(f"{domain} text number {i}", ("neg", "pos")[i % 2], domain) for i in range(start, start + n)]


def test_reservoir_is_bounded_mixes_the_stream_and_round_trips(tmp_path):
    model = TextClassifier.from_encoder(None, ["neg", "pos"], 16)
    learner = ReplayLearner(model, buffer_size=20, trainable_layers=0, seed=3)
    steps = []
    original = learner._step
    learner._step = lambda batch, extra: steps.append((len(batch), len(extra))) or original(batch, extra)
    for k in range(6):
        preds = learner.learn(_batch(8 * k, 8, "a" if k < 3 else "b"))
        assert len(preds) == 8  # predictions only for the new examples
    assert steps[0] == (8, 0) and all(extra == 8 for _, extra in steps[1:])
    assert len(learner._buffer) == 20 and learner._seen == 48
    assert {ex.domain for ex in learner._buffer} == {"a", "b"}  # old and new both kept
    learner.save_state(tmp_path)
    again = ReplayLearner(TextClassifier.from_encoder(None, ["neg", "pos"], 16), buffer_size=20, trainable_layers=0)
    again.load_state(tmp_path)
    assert again._buffer == learner._buffer and again._seen == 48
