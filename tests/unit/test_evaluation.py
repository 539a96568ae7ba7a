"""Held-out evaluation: which examples are held out, per-domain accuracy and forgetting."""

from learners.base import Example
from learners.evaluation import Holdout


def test_every_kth_example_per_domain_is_held_out_up_to_the_cap():
    h = Holdout(every=3, per_domain=2)
    taken = [h.take(Example(f"t{i}", "x", "a")) for i in range(12)]
    assert taken == [False, False, True, False, False, True] + [False] * 6
    assert [h.take(Example("u", "y", None)) for _ in range(3)] == [False, False, True]
    assert set(h.samples) == {"a", "default"}
    assert Holdout(every=0, per_domain=5).take(Example("t", "x")) is False


def test_forgetting_is_best_earlier_accuracy_minus_current(tmp_path):
    h = Holdout(every=1, per_domain=10)
    for i in range(4):
        h.take(Example(f"a{i}", "pos", "a"))
        h.take(Example(f"b{i}", "neg", "b"))
    first = h.evaluate(lambda texts: ["pos"] * len(texts))
    assert first["domain_accuracy"] == {"a": 1.0, "b": 0.0}
    second = h.evaluate(lambda texts: ["neg"] * len(texts))
    assert second["domain_forgetting"] == {"a": 1.0, "b": 0.0}
    assert second["average_accuracy"] == 0.5 and second["forgetting"] == 0.5

    h.save(tmp_path)
    again = Holdout(every=1, per_domain=10)
    assert again.load(tmp_path) and again.samples == h.samples and again.best == h.best
    assert Holdout(1, 1).load(tmp_path / "nowhere") is False


def test_a_growing_sample_does_not_count_as_forgetting():
    h = Holdout(every=1, per_domain=4)
    h.take(Example("a0", "pos", "a"))
    assert h.evaluate(lambda texts: ["pos"] * len(texts))["domain_forgetting"] == {"a": 0.0}  # 1/1
    for i in range(1, 4):
        h.take(Example(f"a{i}", "neg", "a"))
    # 1 of 4 right on the full sample: a different test, not forgetting
    assert h.evaluate(lambda texts: ["pos"] * len(texts))["domain_forgetting"] == {"a": 0.0}
    assert h.evaluate(lambda texts: ["neg"] * len(texts))["domain_forgetting"] == {"a": 0.0}
    assert h.evaluate(lambda texts: ["pos"] * len(texts))["domain_forgetting"] == {"a": 0.5}


def test_backward_transfer_compares_a_domain_with_its_last_evaluation_while_it_streamed(tmp_path):
    h = Holdout(every=1, per_domain=10)
    for i in range(4):
        h.take(Example(f"a{i}", "pos", "a"))
    first = h.evaluate(lambda texts: ["pos"] * len(texts))
    assert first["backward_transfer"] is None  # every domain is still streaming
    for i in range(4):
        h.take(Example(f"b{i}", "neg", "b"))
    # "a" stopped streaming: 1.0 when it was learned, 0.0 now; "b" is streaming
    second = h.evaluate(lambda texts: ["neg"] * len(texts))
    assert second["backward_transfer"] == -1.0
    h.save(tmp_path)
    again = Holdout(every=1, per_domain=10)
    again.load(tmp_path)
    # neither streamed since: "a" 1.0 -> 1.0 and "b" 1.0 -> 0.0
    third = again.evaluate(lambda texts: ["pos"] * len(texts))
    assert third["backward_transfer"] == -0.5
