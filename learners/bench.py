"""The offline continual-learning benchmark behind ``streamcl bench``: one pass over a labeled
stream, domain after domain, with the learners the live platform builds (``build_learner``).

Per domain a seeded random sample is held out as its test set; the rest is streamed once in
micro-batches of ``batch_size``. Every domain's test set is scored at each domain boundary,
giving the accuracy matrix (row i: after training through domain i; column j: domain j's test
set), final average accuracy and forgetting; the predictions ``learn`` returns give the
prequential accuracy. The ``naive`` and ``iid`` baselines (the same training examples shuffled
across domains, trained naively: the one-pass upper bound) give each strategy's gap closure.

Domain boundaries: with ``--order domain`` a domain's examples are contiguous and its boundary
follows its last one. With ``--order time`` or ``file`` domains may interleave: domains are
ordered by their *last* appearance in the stream and domain i's boundary is the point where its
last training example has passed (whatever other domains it trained on before). The ``iid``
stream is scored at the same numbers of examples as the ordered stream's boundaries. Micro-batches
never straddle a boundary, so a boundary is an exact point of the stream.

Each strategy runs in its own spawned process: ``peak_rss_mb`` is that strategy's, and a crash
is reported in its result instead of ending the benchmark. Names that resolve to the same run
(``default`` and the strategy it stands for; ``naive`` asked for and the ``naive`` baseline) are
run once and reported under every name.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learners.settings import STRATEGIES, LearnerSettings
from streaming.datasets import Row

if TYPE_CHECKING:
    from learners.base import Learner

__all__ = [
    "BASELINES",
    "DEFAULT_DOMAIN",
    "ORDERS",
    "backward_transfer",
    "boundaries",
    "check_strategies",
    "evaluate_stream",
    "forgetting",
    "format_table",
    "gap_closure",
    "plot",
    "resolve_strategy",
    "run_bench",
    "run_strategy",
    "split",
]

#: The domain of rows that have none.
DEFAULT_DOMAIN = "all"
#: Stream orders: domains one after another (shuffled inside), by ``ts``, or as in the file.
ORDERS = ("domain", "time", "file")
#: The reference runs ``--baselines`` adds: plain fine-tuning, and the same on a shuffled stream.
BASELINES = ("naive", "iid")
_EVAL_BATCH = 64
# LearnerSettings fields that do not change what an offline pass learns (versions, registry,
# drift handling and held-out sampling of the live loop); every other field is reported.
_LIVE_ONLY = ("model_name", "labels", "registry_uri", "strategy", "seed", "keep_versions", "prequential_window")
_LIVE_ONLY_PREFIXES = ("version_", "drift_", "concept_", "eval_")


# --------------------------------------------------------------------------- strategies


def resolve_strategy(name: str) -> str:
    """The strategy a command-line name stands for (``default``: the settings' default)."""
    if name == "default":
        return str(LearnerSettings.model_fields["strategy"].default)
    return name


def check_strategies(names: Sequence[str]) -> None:
    """ValueError naming the valid strategies when a name is not one (read at run time)."""
    valid = ("default", *STRATEGIES)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    if not names:
        raise ValueError("give at least one --strategy")


# --------------------------------------------------------------------------- the split


def _sizes(n: int, train_per_domain: int | None, test_per_domain: int | None) -> tuple[int, int]:
    """(test, train) sizes of a domain of ``n`` rows: the test sample is ``test_per_domain``
    (default: a fifth of the domain); a domain shorter than train + test gives training the
    rows it needs but keeps at least a fifth for test (never more than ``test_per_domain``)."""
    fifth = math.ceil(n / 5)  # 1 <= fifth <= n - 1 for n >= 2
    train_cap = train_per_domain if train_per_domain is not None else n
    test_cap = test_per_domain if test_per_domain is not None else fifth
    n_test = min(test_cap, max(fifth, n - train_cap))
    return n_test, min(train_cap, n - n_test)


def split(
    rows: Sequence[Row],
    order: str = "domain",
    train_per_domain: int | None = None,
    test_per_domain: int | None = None,
    seed: int = 0,
) -> tuple[list[Row], dict[str, list[Row]], list[str]]:
    """(stream, test set per domain, domains in accuracy-matrix order).

    Rows without a domain get ``DEFAULT_DOMAIN``. Each domain's test sample is drawn with a
    generator seeded by ``seed`` and the domain name, so it does not depend on the order or
    on the other domains. Capped training rows are a seeded random sample of the rest, kept in
    file (or time) order for ``file`` and ``time``. ValueError on input that cannot make a
    benchmark (no rows, a domain under 2 rows, caps under 1, ``time`` without ``ts``).
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid: {', '.join(ORDERS)}")
    for flag, value in (("--train-per-domain", train_per_domain), ("--test-per-domain", test_per_domain)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if not rows:
        raise ValueError("no rows to benchmark")
    if order == "time":
        missing = next((i for i, r in enumerate(rows) if r.ts is None), None)
        if missing is not None:
            raise ValueError(f"--order time needs a ts on every row; row {missing + 1} has none")
    named = [r if r.domain else dataclasses.replace(r, domain=DEFAULT_DOMAIN) for r in rows]
    by_domain: dict[str, list[int]] = {}
    for i, row in enumerate(named):
        by_domain.setdefault(str(row.domain), []).append(i)
    for domain, idx in by_domain.items():
        if len(idx) < 2:
            raise ValueError(f"domain {domain!r} has {len(idx)} row; every domain needs at least 2 (train and test)")

    tests: dict[str, list[Row]] = {}
    train: dict[str, list[int]] = {}
    for domain, idx in by_domain.items():
        n_test, n_train = _sizes(len(idx), train_per_domain, test_per_domain)
        shuffled = list(idx)
        random.Random(f"{seed}:{domain}").shuffle(shuffled)
        tests[domain] = [named[i] for i in shuffled[:n_test]]
        train[domain] = shuffled[n_test : n_test + n_train]  # shuffled: the order of ``domain``

    if order == "domain":
        stream = [named[i] for domain in by_domain for i in train[domain]]
        domains = list(by_domain)
    else:
        chosen = sorted(i for idx in train.values() for i in idx)
        if order == "time":
            chosen.sort(key=lambda i: float(named[i].ts or 0.0))  # stable: equal ts keep file order
        stream = [named[i] for i in chosen]
        last = {str(row.domain): pos for pos, row in enumerate(stream)}
        domains = sorted(last, key=last.__getitem__)
    return stream, {d: tests[d] for d in domains}, domains


def boundaries(stream: Sequence[Row], domains: Sequence[str]) -> list[int]:
    """Per domain (in ``domains`` order), the number of stream examples up to and including
    its last one."""
    last = {str(row.domain): pos + 1 for pos, row in enumerate(stream)}
    return [last[d] for d in domains]


# --------------------------------------------------------------------------- metrics


def forgetting(matrix: Sequence[Sequence[float]]) -> float | None:
    """Average, over every domain but the last, of its best accuracy from its own row up to the
    second-to-last row, minus its final accuracy (a fraction; negative: it improved later).
    None with fewer than two domains."""
    t = len(matrix)
    if t < 2:
        return None
    drops = [max(matrix[i][j] for i in range(j, t - 1)) - matrix[-1][j] for j in range(t - 1)]
    return sum(drops) / len(drops)


def backward_transfer(matrix: Sequence[Sequence[float]]) -> float | None:
    """Average, over every domain but the last, of its final accuracy minus its accuracy right
    after its own training (row j): negative is forgetting, positive is later training helping
    it (Lopez-Paz & Ranzato 2017). None with fewer than two domains."""
    t = len(matrix)
    if t < 2:
        return None
    return sum(matrix[-1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def gap_closure(strategy: float | None, naive: float | None, iid: float | None) -> float | None:
    """(strategy − naive) / (iid − naive) on final average accuracy: 0 is no better than naive
    fine-tuning, 1 matches the shuffled one-pass upper bound. None without both baselines or
    when they are equal."""
    if strategy is None or naive is None or iid is None or math.isclose(iid, naive, abs_tol=1e-12):
        return None
    return (strategy - naive) / (iid - naive) + 0.0  # + 0.0: naive's own is 0.0, not -0.0


def _accuracy(predict: Callable[[Sequence[str]], Sequence[str | None]], rows: Sequence[Row], known: set[str]) -> float:
    """Accuracy on ``rows``; a label the stream has not trained on counts as an error, whatever
    the learner predicted."""
    correct = 0
    for i in range(0, len(rows), _EVAL_BATCH):
        chunk = rows[i : i + _EVAL_BATCH]
        preds = predict([r.text for r in chunk])
        correct += sum(p == r.label and r.label in known for p, r in zip(preds, chunk, strict=True))
    return correct / len(rows)


def evaluate_stream(
    learner: Learner,
    stream: Sequence[Row],
    tests: Mapping[str, Sequence[Row]],
    domains: Sequence[str],
    bounds: Sequence[int],
    batch_size: int,
    eval_every: int | None = None,
    progress: bool = False,
    desc: str = "",
) -> dict[str, Any]:
    """Stream once through ``learner`` in micro-batches that never straddle a boundary, scoring
    every test set at each boundary (and after the first micro-batch past every ``eval_every``
    examples, which leaves the batches, hence the training, unchanged)."""
    from tqdm import tqdm

    from learners.base import Example

    if sorted(bounds) != list(bounds) or len(set(bounds)) != len(bounds) or len(bounds) != len(domains):
        raise ValueError("one strictly increasing boundary per domain expected")
    total = len(stream)
    known: set[str] = set()
    correct = 0
    learn_s = eval_s = 0.0
    matrix: list[list[float]] = []
    xs: list[int] = []
    curve: dict[str, list[float]] = {d: [] for d in domains}
    next_check = eval_every or 0
    pos = 0

    def score() -> list[float]:
        nonlocal eval_s
        started = time.perf_counter()
        accs = [_accuracy(learner.predict, tests[d], known) for d in domains]
        eval_s += time.perf_counter() - started
        xs.append(pos)
        for d, acc in zip(domains, accs):
            curve[d].append(acc)
        return accs

    with tqdm(total=total, desc=desc, unit="ex", file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
        for bound in bounds:
            while pos < bound:
                batch = stream[pos : min(pos + batch_size, bound)]
                started = time.perf_counter()
                preds = learner.learn([Example(r.text, r.label, r.domain) for r in batch])
                learn_s += time.perf_counter() - started
                if len(preds) != len(batch):
                    raise RuntimeError(f"learn returned {len(preds)} predictions for {len(batch)} examples")
                correct += sum(p == r.label for p, r in zip(preds, batch))
                known.update(r.label for r in batch)
                pos += len(batch)
                bar.update(len(batch))
                if eval_every and pos >= next_check:
                    if pos < bound:  # a boundary scores anyway
                        score()
                    next_check = (pos // eval_every + 1) * eval_every
            matrix.append(score())
    final = matrix[-1]
    return {
        "final_avg_accuracy": sum(final) / len(final),
        "forgetting": forgetting(matrix),
        "backward_transfer": backward_transfer(matrix),
        "prequential_accuracy": correct / total if total else None,
        "examples_per_second": total / learn_s if learn_s > 0 else None,
        "train_examples": total,
        "learn_seconds": learn_s,
        "eval_seconds": eval_s,
        "accuracy_matrix": matrix,
        "domains": list(domains),
        "labels_trained": sorted(known),
        "curve": {"examples": xs, "accuracy": curve},
    }


# --------------------------------------------------------------------------- runs


def learner_settings(strategy: str, seed: int) -> LearnerSettings:
    """The live learner's settings (``STREAMCL_*``) for ``strategy``, with no labels known."""
    values: dict[str, Any] = {"strategy": strategy, "seed": seed, "labels": []}
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
    from learners.service import build_learner

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
    check_strategies(names)
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"--eval-every must be at least 1, got {eval_every}")
    if baselines and "iid" in names:
        raise ValueError("'iid' is the name of a baseline; it cannot also be a strategy")
    stream, tests, domains = split(rows, order, train_per_domain, test_per_domain, seed)
    bounds = boundaries(stream, domains)
    base = learner_settings(resolve_strategy("default"), seed)  # validates STREAMCL_* up front

    plan: dict[str, tuple[str, bool]] = {name: (resolve_strategy(name), False) for name in names}
    if baselines:
        plan.setdefault("naive", ("naive", False))
        plan["iid"] = ("naive", True)
    iid_stream = list(stream)
    random.Random(f"{seed}:iid").shuffle(iid_stream)

    started = time.perf_counter()
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
            args = (strategy, iid_stream if iid else stream, tests, domains, bounds, seed, eval_every, progress, name)
            result = _in_child(runner, *args)
            done[(strategy, iid)] = (name, result)
        results[name] = {**entry, **result}

    def final(name: str) -> float | None:
        value = results.get(name, {}).get("final_avg_accuracy")
        return value if isinstance(value, float | int) else None

    for result in results.values():
        value = result.get("final_avg_accuracy")
        own = value if isinstance(value, float | int) else None
        result["gap_closure"] = gap_closure(own, final("naive"), final("iid")) if baselines else None
    notes = [
        f"{name}: build_learner gave the naive learner for strategy {r['resolved']!r}: these are naive figures"
        for name, r in results.items()
        if r.get("learner_name") == "naive" and r["resolved"] != "naive" and "same_run_as" not in r
    ]
    naive_acc, iid_acc = final("naive"), final("iid")
    if baselines and naive_acc is not None and iid_acc is not None and iid_acc <= naive_acc:
        notes.append(
            f"iid ({iid_acc:.3f}) did not beat naive ({naive_acc:.3f}): gap closure does not measure anything here"
        )

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


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, float | int) else "-"


def format_table(bench: Mapping[str, Any]) -> str:
    """A short text table of the headline figures per strategy."""
    head = (
        f"{'strategy':<16} {'final_acc':>9} {'forgetting':>10} {'bwt':>7} {'prequential':>11} {'ex/s':>8} "
        f"{'gap_closure':>11}"
    )
    lines = [head, "-" * len(head)]
    for name, r in bench["results"].items():
        if "error" in r:
            lines.append(f"{name:<16} error: {r['error']}")
            continue
        figures = [
            (r.get("final_avg_accuracy"), ".3f", 9),
            (r.get("forgetting"), ".3f", 10),
            (r.get("backward_transfer"), ".3f", 7),
            (r.get("prequential_accuracy"), ".3f", 11),
            (r.get("examples_per_second"), ".1f", 8),
            (r.get("gap_closure"), ".3f", 11),
        ]
        lines.append(f"{name:<16} " + " ".join(f"{_fmt(v, spec):>{width}}" for v, spec, width in figures))
    lines += [f"note: {note}" for note in bench.get("notes", [])]
    return "\n".join(lines)


def plot(bench: Mapping[str, Any], path: str | Path) -> None:
    """A PNG of each domain's test accuracy over the stream, one panel per strategy, dashed
    lines at the domain boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(name, r) for name, r in bench["results"].items() if "curve" in r]
    n = max(1, len(runs))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False, sharey=True)
    bounds = [d["boundary"] for d in bench["domains"]]
    for ax, (name, r) in zip(axes.flat, runs):
        xs = r["curve"]["examples"]
        for domain, ys in r["curve"]["accuracy"].items():
            ax.plot(xs, ys, marker="o", markersize=3, label=domain)
        for b in bounds[:-1]:
            ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
        title = name if r.get("resolved") in (None, name) else f"{name} ({r['resolved']})"
        ax.set_title(f"{title}: final {r['final_avg_accuracy']:.3f}")
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    if runs:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize="small")
    fig.tight_layout(rect=(0, 0.08 if runs else 0, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
