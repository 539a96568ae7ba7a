"""``streamcl bench --seeds N``: the mean and spread of every figure over seeds, gap closure from
the mean accuracies, failed seeds, and the single-seed result left unchanged (fakes only)."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from learners import bench
from services.cli import main
from streaming.datasets import Row

# final accuracy per (strategy, seed): gap closures per seed 0.5, 1.0, 0.0 but 0.5 from the means
_ACC = {
    "er-ace": {1: 0.6, 2: 0.8, 3: 0.5},
    "naive": {1: 0.5, 2: 0.5, 3: 0.5},
    "iid": {1: 0.7, 2: 0.8, 3: 0.9},
}


def _result(name: str, seed: int) -> dict[str, Any]:
    acc = _ACC[name][seed]
    return {
        "resolved": "naive" if name == "iid" else name,
        "final_avg_accuracy": acc,
        "forgetting": 0.1 * seed,
        "backward_transfer": None,
        "prequential_accuracy": 0.4,
        "examples_per_second": 10.0 * seed,
        "accuracy_matrix": [[acc, 0.0], [acc - 0.1, acc + 0.1]],
        "curve": {"examples": [1, 2], "accuracy": {}},
        "learner_name": name,
    }


def fake_bench(rows: Any = None, strategies: Any = (), *, seed: int = 0, baselines: bool = False, **_: Any) -> dict:
    """A stand-in for run_bench: figures from ``_ACC``, per-seed gap closure as run_bench gives it."""
    names = ["er-ace", *(("naive", "iid") if baselines else ())]
    results = {name: _result(name, seed) for name in names}
    for r in results.values():
        naive, iid = _ACC["naive"][seed], _ACC["iid"][seed]
        r["gap_closure"] = bench.gap_closure(r["final_avg_accuracy"], naive, iid) if baselines else None
    return {
        "settings": {"seed": seed, "order": "domain", "baselines": baselines},
        "machine": {"cpu_count": 2},
        "domains": [{"name": "a", "train": 4, "test": 1, "boundary": 4}, {"name": "b", "train": 4, "test": 1}],
        "stream_length": 8,
        "seconds": 1.0,
        "results": results,
        "notes": [f"note of seed {seed}"] if seed == 2 else [],
    }


def test_spread_is_mean_sample_std_min_max_and_values():
    s = bench.spread([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.2)
    assert (s["min"], s["max"], s["values"]) == (0.5, 0.9, [0.5, 0.7, 0.9])
    assert bench.spread([0.4])["std"] == 0.0


def test_one_seed_keeps_the_single_run_result():
    single = bench.run_seeds(fake_bench, 1, seed=1, baselines=True)
    assert single == fake_bench(seed=1, baselines=True)
    assert "runs" not in single and "seeds" not in single["settings"] and "spread" not in single["results"]["naive"]


def test_seeds_report_the_mean_and_spread_of_every_figure():
    out = bench.run_seeds(fake_bench, 3, seed=1, baselines=True)
    assert out["settings"]["seeds"] == [1, 2, 3] and out["settings"]["seed"] == 1
    assert [run["settings"]["seed"] for run in out["runs"]] == [1, 2, 3]
    r = out["results"]["er-ace"]
    assert r["final_avg_accuracy"] == pytest.approx(statistics.fmean([0.6, 0.8, 0.5]))
    acc = r["spread"]["final_avg_accuracy"]
    assert acc["std"] == pytest.approx(statistics.stdev([0.6, 0.8, 0.5]))
    assert (acc["min"], acc["max"]) == (0.5, 0.8)
    assert r["forgetting"] == pytest.approx(0.2) and r["spread"]["forgetting"]["values"] == pytest.approx(
        [0.1, 0.2, 0.3]
    )
    assert r["examples_per_second"] == pytest.approx(20.0) and r["prequential_accuracy"] == pytest.approx(0.4)
    assert r["backward_transfer"] is None and "backward_transfer" not in r["spread"]  # None in every seed
    assert r["newest_domain_accuracy"] == pytest.approx(statistics.fmean([0.7, 0.9, 0.6]))
    assert r["accuracy_matrix"][1][1] == pytest.approx(statistics.fmean([0.7, 0.9, 0.6]))
    assert "curve" not in r and r["resolved"] == "er-ace" and r["seeds"] == [1, 2, 3]
    assert out["notes"] == ["seed 2: note of seed 2"]


def test_gap_closure_over_seeds_comes_from_the_mean_accuracies():
    out = bench.run_seeds(fake_bench, 3, seed=1, baselines=True)
    r = out["results"]["er-ace"]
    assert r["gap_closure_per_seed"] == pytest.approx([0.5, 1.0, 0.0])
    # (mean 0.6333 - mean 0.5) / (mean 0.8 - mean 0.5) = 0.444, not the mean of per-seed closures (0.5)
    assert r["gap_closure"] == pytest.approx((statistics.fmean([0.6, 0.8, 0.5]) - 0.5) / (0.8 - 0.5))
    assert out["results"]["naive"]["gap_closure"] == 0.0 and out["results"]["iid"]["gap_closure"] == 1.0
    no_baselines = bench.run_seeds(fake_bench, 2, seed=1)
    assert no_baselines["results"]["er-ace"]["gap_closure"] is None


def test_a_seed_that_failed_is_reported_and_left_out_of_the_means():
    def flaky(seed: int = 0, **kwargs: Any) -> dict:
        out = fake_bench(seed=seed, **kwargs)
        if seed == 2:
            out["results"]["er-ace"] = {"resolved": "er-ace", "error": "RuntimeError: boom"}
        if seed in (1, 2, 3):
            out["results"]["naive"] = {"resolved": "naive", "error": "the process died"}
        return out

    out = bench.run_seeds(flaky, 3, seed=1, baselines=True)
    r = out["results"]["er-ace"]
    assert r["errors"] == {"2": "RuntimeError: boom"} and r["seeds"] == [1, 3]
    assert r["final_avg_accuracy"] == pytest.approx(0.55) and "error" not in r
    naive = out["results"]["naive"]
    assert naive["error"] == "the process died" and naive["errors"].keys() == {"1", "2", "3"}
    assert r["gap_closure"] is None  # no naive mean
    assert "naive            error: the process died" in bench.format_table(out)


def test_table_shows_mean_and_std_over_seeds():
    table = bench.format_table(bench.run_seeds(fake_bench, 3, seed=1, baselines=True))
    er_ace = next(line for line in table.splitlines() if line.startswith("er-ace"))
    assert "0.633±0.153" in er_ace and "0.444" in er_ace
    assert "seeds: [1, 2, 3]; gap closure from the mean accuracies" in table
    single = bench.format_table(fake_bench(seed=1, baselines=True))
    assert "±" not in single and "seeds:" not in single


def test_seeds_must_be_positive():
    with pytest.raises(ValueError, match="--seeds must be at least 1"):
        bench.run_seeds(fake_bench, 0)


def seeded_runner(strategy, stream, tests, domains, bounds, seed, eval_every, progress, desc):
    """A stand-in for run_strategy in the spawned child whose accuracy follows the seed."""
    return {"final_avg_accuracy": 0.5 + seed / 10, "accuracy_matrix": [[0.5] * len(domains)] * len(domains)}


def test_real_run_bench_over_seeds_with_a_fake_runner():
    rows = [Row(f"{d} {i}", "xy"[i % 2], d) for d in "ab" for i in range(10)]
    out = bench.run_seeds(bench.run_bench, 2, seed=0, rows=rows, strategies=["naive"], runner=seeded_runner)
    assert out["results"]["naive"]["spread"]["final_avg_accuracy"]["values"] == pytest.approx([0.5, 0.6])
    assert out["settings"]["seeds"] == [0, 1] and len(out["runs"]) == 2


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": "xy"[i % 2], "domain": "ab"[i // 6]}) + "\n" for i in range(12))
    )
    return path


def test_cli_seeds_writes_means_spreads_and_every_run(monkeypatch, capsys, tmp_path, tiny):
    import learners.bench

    monkeypatch.setattr(learners.bench, "run_bench", fake_bench)
    out = tmp_path / "r.json"
    argv = ["bench", "--data", str(tiny), "--strategy", "default", "--baselines", "--seed", "1", "--seeds", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "±" in printed and "x 3 seeds" in printed
    result = json.loads(out.read_text())
    assert result["settings"]["seeds"] == [1, 2, 3] and len(result["runs"]) == 3
    assert result["results"]["er-ace"]["spread"]["final_avg_accuracy"]["max"] == 0.8


def test_cli_refuses_bad_seeds_and_an_empty_file(capsys, tmp_path, tiny):
    out = ["--out", str(tmp_path / "r.json")]
    assert main(["bench", "--data", str(tiny), "--strategy", "naive", "--seeds", "0", *out]) == 2
    assert "--seeds must be at least 1, got 0" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["bench", "--data", str(empty), "--strategy", "naive", *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamcl: bench: ") and "no rows (the file is empty)" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()
