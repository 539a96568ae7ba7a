"""The benchmark's runs: each strategy (and baseline) from a fresh encoder in its own spawned
process, and the whole benchmark as a JSON-ready dict."""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib import metadata
from typing import Any

from learners.bench._stream import boundaries, evaluate_stream, gap_closure, split
from learners.settings import LearnerSettings
from learners.strategies import names as strategy_names
from streaming.datasets import Row

#: The reference runs ``--baselines`` adds: plain fine-tuning, and the same on a shuffled stream.
BASELINES = ("naive", "iid")
# LearnerSettings fields that do not change what an offline pass learns (versions, registry,
# drift handling and held-out sampling of the live loop); every other field is reported.
_LIVE_ONLY = ("model_name", "labels", "registry_uri", "strategy", "seed", "keep_versions", "prequential_window")
_LIVE_ONLY_PREFIXES = ("version_", "drift_", "concept_", "eval_")


#: ``NAME+lora``: strategy NAME trained through LoRA adapters (``STREAMCL_ADAPTER=lora``).
LORA_SUFFIX = "+lora"


def resolve_strategy(name: str) -> str:
    """The strategy a command-line name stands for (``default``: the settings' default; a
    ``+lora`` suffix stays)."""
    base, lora = (name[: -len(LORA_SUFFIX)], LORA_SUFFIX) if name.endswith(LORA_SUFFIX) else (name, "")
    if base == "default":
        return str(LearnerSettings.model_fields["strategy"].default) + lora
    return name


def check_strategies(names: Sequence[str]) -> None:
    """ValueError naming the valid strategies when a name is not one (read at run time)."""
    valid = ("default", *strategy_names())
    unknown = [n for n in names if n.removesuffix(LORA_SUFFIX) not in valid]
    if unknown:
        raise ValueError(
            f"unknown strategy {', '.join(map(repr, unknown))}; valid: {', '.join(valid)} (each also as NAME+lora)"
        )
    if not names:
        raise ValueError("give at least one --strategy")


def learner_settings(strategy: str, seed: int) -> LearnerSettings:
    """The live learner's settings (``STREAMCL_*``) for ``strategy``, with no labels known
    (``NAME+lora``: with LoRA adapters)."""
    values: dict[str, Any] = {"strategy": strategy.removesuffix(LORA_SUFFIX), "seed": seed, "labels": []}
    if strategy.endswith(LORA_SUFFIX):
        values["adapter"] = "lora"
    return LearnerSettings(**values)


def reported_settings(settings: LearnerSettings) -> dict[str, Any]:
    """The learner settings that shape an offline pass (see ``_LIVE_ONLY``)."""
    return {
        k: v
        for k, v in settings.model_dump(mode="json").items()
        if k not in _LIVE_ONLY and not k.startswith(_LIVE_ONLY_PREFIXES)
    }


def run_strategy(
    strategy: str,
    stream: Sequence[Row],
    tests: Mapping[str, Sequence[Row]],
    domains: Sequence[str],
    bounds: Sequence[int],
    seed: int = 0,
    eval_every: int | None = None,
    progress: bool = False,
    desc: str = "",
) -> dict[str, Any]:
    """One strategy from a fresh encoder with no labels, over ``stream``; meant to run in its
    own process (``peak_rss_mb`` is this process's peak)."""
    import resource
    import warnings

    import torch
    from transformers.utils import logging as transformers_logging

    from learners.model import TextClassifier, set_threads
    from learners.strategies import build_learner

    started = time.perf_counter()
    transformers_logging.disable_progress_bar()  # the stream's bar is the one that matters
    warnings.filterwarnings("ignore", message="Initializing zero-element tensors")  # a head with no labels yet
    settings = learner_settings(strategy, seed)
    set_threads(settings.torch_threads)
    torch.manual_seed(seed)
    model = TextClassifier.from_encoder(settings.model_path, [], settings.max_length)
    learner = build_learner(settings, model)
    result = evaluate_stream(
        learner, stream, tests, domains, bounds, settings.batch_size, eval_every, progress, desc or strategy
    )
    result["learner"] = type(learner).__name__
    result["learner_name"] = learner.name
    result["torch_threads"] = torch.get_num_threads()
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh spawned process; an exception or a dead process becomes
    ``{"error": ...}``."""
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            return {"error": f"the process died ({exc})"}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}


def _machine(torch_threads: int) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch_threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
    }


def _check_run(names: Sequence[str], baselines: bool, eval_every: int | None) -> None:
    check_strategies(names)
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"--eval-every must be at least 1, got {eval_every}")
    if baselines and "iid" in names:
        raise ValueError("'iid' is the name of a baseline; it cannot also be a strategy")


def _plan(names: Sequence[str], baselines: bool) -> dict[str, tuple[str, bool]]:
    """Name -> (strategy it runs, on the shuffled stream?)."""
    plan: dict[str, tuple[str, bool]] = {name: (resolve_strategy(name), False) for name in names}
    if baselines:
        plan.setdefault("naive", ("naive", False))
        plan["iid"] = ("naive", True)
    return plan


def _run_plan(
    plan: Mapping[str, tuple[str, bool]],
    streams: Mapping[bool, Sequence[Row]],
    rest: tuple[Any, ...],
    runner: Callable[..., dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Each planned name's result, running each (strategy, stream) once in its own process;
    ``rest``: the runner's arguments after the stream, up to the description."""
    done: dict[tuple[str, bool], tuple[str, dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, (strategy, iid) in plan.items():
        entry: dict[str, Any] = {"resolved": strategy}
        if iid:
            entry["stream"] = "the same training examples shuffled across domains"
        if (strategy, iid) in done:
            first, result = done[(strategy, iid)]
            entry["same_run_as"] = first
        else:
            result = _in_child(runner, strategy, streams[iid], *rest, name)
            done[(strategy, iid)] = (name, result)
        results[name] = {**entry, **result}
    return results


def _final(results: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    value = results.get(name, {}).get("final_avg_accuracy")
    return value if isinstance(value, float | int) else None


def _compare(results: dict[str, dict[str, Any]], baselines: bool) -> list[str]:
    """Add each result's gap closure; the notes on figures that do not mean what they seem."""
    naive_acc, iid_acc = _final(results, "naive"), _final(results, "iid")
    for name, result in results.items():
        result["gap_closure"] = gap_closure(_final(results, name), naive_acc, iid_acc) if baselines else None
    notes = [
        f"{name}: build_learner gave the naive learner for strategy {r['resolved']!r}: these are naive figures"
        for name, r in results.items()
        if r.get("learner_name") == "naive" and r["resolved"] != "naive" and "same_run_as" not in r
    ]
    if baselines and naive_acc is not None and iid_acc is not None and iid_acc <= naive_acc:
        notes.append(
            f"iid ({iid_acc:.3f}) did not beat naive ({naive_acc:.3f}): gap closure does not measure anything here"
        )
    return notes


def _untrained_note(stream: Sequence[Row], tests: Mapping[str, Sequence[Row]]) -> list[str]:
    """A note naming the labels that only the test sets have (they count as errors)."""
    untrained = sorted({r.label for rows in tests.values() for r in rows} - {r.label for r in stream})
    if not untrained:
        return []
    shown = ", ".join(map(repr, untrained[:10])) + (f" and {len(untrained) - 10} more" if len(untrained) > 10 else "")
    return [f"{len(untrained)} label(s) only in the test sets, never trained on, count as errors: {shown}"]


def run_bench(
    rows: Sequence[Row],
    strategies: Sequence[str],
    *,
    baselines: bool = False,
    order: str = "domain",
    train_per_domain: int | None = None,
    test_per_domain: int | None = None,
    seed: int = 0,
    eval_every: int | None = None,
    source: Mapping[str, Any] | None = None,
    progress: bool = False,
    runner: Callable[..., dict[str, Any]] = run_strategy,
) -> dict[str, Any]:
    """The whole benchmark as a JSON-ready dict: settings, machine, per-domain counts and a
    result per strategy name (and baseline), each from its own process."""
    names = list(dict.fromkeys(strategies))
    _check_run(names, baselines, eval_every)
    stream, tests, domains = split(rows, order, train_per_domain, test_per_domain, seed)
    bounds = boundaries(stream, domains)
    base = learner_settings(resolve_strategy("default"), seed)  # validates STREAMCL_* up front
    iid_stream = list(stream)
    random.Random(f"{seed}:iid").shuffle(iid_stream)
    started = time.perf_counter()
    rest = (tests, domains, bounds, seed, eval_every, progress)
    results = _run_plan(_plan(names, baselines), {False: stream, True: iid_stream}, rest, runner)
    notes = _compare(results, baselines) + _untrained_note(stream, tests)
    return {
        "settings": {
            **dict(source or {}),
            "order": order,
            "seed": seed,
            "train_per_domain": train_per_domain,
            "test_per_domain": test_per_domain,
            "eval_every": eval_every,
            "strategies": names,
            "baselines": baselines,
            "learner": reported_settings(base),
        },
        "machine": _machine(base.torch_threads),
        "domains": [
            {"name": d, "train": sum(r.domain == d for r in stream), "test": len(tests[d]), "boundary": b}
            for d, b in zip(domains, bounds)
        ],
        "stream_length": len(stream),
        "seconds": time.perf_counter() - started,
        "results": results,
        "notes": notes,
    }


# --------------------------------------------------------------------------- reporting
