"""``streamcl bench --seeds N``: the benchmark once per seed (seed, seed + 1, …) and the mean and
spread of every figure over the seeds; gap closure over seeds comes from the mean accuracies."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

from learners.bench._stream import gap_closure

#: Figures that only make sense for one run: their per-seed values stay in ``runs``.
_PER_RUN = ("curve", "accuracy_matrix", "labels_trained", "gap_closure")


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0.0 for one value), min, max and the values themselves."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean_matrix(matrices: Sequence[Any]) -> list[list[float]] | None:
    """The element-wise mean of equally shaped matrices, else None."""
    shapes = {tuple(len(row) for row in m) for m in matrices if isinstance(m, list)}
    if len(shapes) != 1 or len([m for m in matrices if isinstance(m, list)]) != len(matrices):
        return None
    return [[statistics.fmean(col) for col in zip(*rows)] for rows in zip(*matrices)]


def _newest(result: Mapping[str, Any]) -> float | None:
    """Accuracy on the last domain's test set at the end (the plasticity figure)."""
    matrix = result.get("accuracy_matrix")
    return float(matrix[-1][-1]) if isinstance(matrix, list) and matrix and matrix[-1] else None


def aggregate_result(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One strategy's figures over seeds: each numeric figure is the mean (its spread under
    ``spread``), the rest as in the first seed that ran; seeds that failed under ``errors``."""
    ok = {s: r for s, r in per_seed.items() if "error" not in r}
    errors = {str(s): r["error"] for s, r in per_seed.items() if "error" in r}
    if not ok:
        first = next(iter(per_seed.values()))
        return {**{k: v for k, v in first.items() if k != "error"}, "error": _errors_line(errors), "errors": errors}
    runs = list(ok.values())
    out: dict[str, Any] = {k: v for k, v in runs[0].items() if k not in _PER_RUN}
    figures: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(k for r in runs for k in r if k not in _PER_RUN):
        values = [float(r[key]) for r in runs if _number(r.get(key))]
        if values:  # a figure some seeds lack (None) is summarised over the seeds that have it
            figures[key] = spread(values)
            out[key] = figures[key]["mean"]
    newest = [_newest(r) for r in runs]
    if all(v is not None for v in newest):
        figures["newest_domain_accuracy"] = spread([float(v) for v in newest if v is not None])
        out["newest_domain_accuracy"] = figures["newest_domain_accuracy"]["mean"]
    matrix = _mean_matrix([r.get("accuracy_matrix") for r in runs])
    if matrix is not None:
        out["accuracy_matrix"] = matrix
    out["seeds"] = list(ok)
    out["spread"] = figures
    if errors:
        out["errors"] = errors
    return out


def _errors_line(errors: Mapping[str, str]) -> str:
    messages = list(dict.fromkeys(errors.values()))
    return messages[0] if len(messages) == 1 else "; ".join(f"seed {s}: {e}" for s, e in errors.items())


def _gap_closures(results: dict[str, dict[str, Any]], runs: Sequence[Mapping[str, Any]], baselines: bool) -> None:
    """Gap closure from the mean accuracies, and its per-seed values beside it."""
    mean = {name: r.get("final_avg_accuracy") if "error" not in r else None for name, r in results.items()}
    for name, result in results.items():
        if not baselines:
            result["gap_closure"] = None
            continue
        result["gap_closure"] = gap_closure(mean.get(name), mean.get("naive"), mean.get("iid"))
        result["gap_closure_per_seed"] = [run["results"].get(name, {}).get("gap_closure") for run in runs]


def aggregate(runs: Sequence[Mapping[str, Any]], baselines: bool) -> dict[str, Any]:
    """The benchmark over seeds from each seed's ``run_bench`` result (in seed order)."""
    if not runs:
        raise ValueError("no runs to aggregate")
    seeds = [int(run["settings"]["seed"]) for run in runs]
    names = list(dict.fromkeys(name for run in runs for name in run["results"]))
    results = {
        name: aggregate_result({s: run["results"].get(name, {"error": "not run"}) for s, run in zip(seeds, runs)})
        for name in names
    }
    _gap_closures(results, runs, baselines)
    notes = list(dict.fromkeys(f"seed {s}: {note}" for s, run in zip(seeds, runs) for note in run.get("notes", [])))
    naive, iid = results.get("naive", {}).get("final_avg_accuracy"), results.get("iid", {}).get("final_avg_accuracy")
    if baselines and _number(naive) and _number(iid) and iid <= naive:
        notes.append(
            f"mean iid ({iid:.3f}) did not beat mean naive ({naive:.3f}): gap closure does not measure anything"
        )
    first = runs[0]
    return {
        "settings": {**first["settings"], "seed": seeds[0], "seeds": seeds},
        "machine": first["machine"],
        "domains": first["domains"],
        "stream_length": first["stream_length"],
        "seconds": sum(float(run["seconds"]) for run in runs),
        "results": results,
        "notes": notes,
        "runs": list(runs),
    }


def run_seeds(bench: Callable[..., dict[str, Any]], seeds: int, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """``bench(seed=s, **kwargs)`` for s = seed … seed + seeds − 1; one seed gives that run's
    result unchanged, more give :func:`aggregate` of them."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    started = time.perf_counter()
    runs = [bench(seed=seed + i, **kwargs) for i in range(seeds)]
    if seeds == 1:
        return runs[0]
    out = aggregate(runs, bool(kwargs.get("baselines", False)))
    out["seconds"] = time.perf_counter() - started
    return out
