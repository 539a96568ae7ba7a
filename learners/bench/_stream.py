"""The benchmark's stream: the per-domain split, the domain boundaries, one learner's pass
over the stream with the accuracy matrix, and the figures computed from it."""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streaming.datasets import Row

if TYPE_CHECKING:
    from learners.base import Example, Learner

#: The domain of rows that have none.
DEFAULT_DOMAIN = "all"
#: Stream orders: domains one after another (shuffled inside), by ``ts``, or as in the file.
ORDERS = ("domain", "time", "file")
_EVAL_BATCH = 64


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


class _StreamRun:
    """The running figures of one pass of :func:`evaluate_stream`."""

    def __init__(self, learner: Learner, tests: Mapping[str, Sequence[Row]], domains: Sequence[str]) -> None:
        self.learner, self.tests, self.domains = learner, tests, domains
        self.known: set[str] = set()
        self.correct = self.pos = 0
        self.learn_s = self.eval_s = 0.0
        self.matrix: list[list[float]] = []
        self.xs: list[int] = []
        self.curve: dict[str, list[float]] = {d: [] for d in domains}

    def learn(self, batch: Sequence[Row], example: Callable[[Row], Example]) -> None:
        """Predict-then-train one micro-batch, counting its prequential hits."""
        started = time.perf_counter()
        preds = self.learner.learn([example(r) for r in batch])
        self.learn_s += time.perf_counter() - started
        if len(preds) != len(batch):
            raise RuntimeError(f"learn returned {len(preds)} predictions for {len(batch)} examples")
        self.correct += sum(p == r.label for p, r in zip(preds, batch))
        self.known.update(r.label for r in batch)
        self.pos += len(batch)

    def score(self) -> list[float]:
        """Every domain's test accuracy now (a point of the curve)."""
        started = time.perf_counter()
        accs = [_accuracy(self.learner.predict, self.tests[d], self.known) for d in self.domains]
        self.eval_s += time.perf_counter() - started
        self.xs.append(self.pos)
        for d, acc in zip(self.domains, accs):
            self.curve[d].append(acc)
        return accs

    def result(self) -> dict[str, Any]:
        total, final = self.pos, self.matrix[-1]
        return {
            "final_avg_accuracy": sum(final) / len(final),
            "forgetting": forgetting(self.matrix),
            "backward_transfer": backward_transfer(self.matrix),
            "prequential_accuracy": self.correct / total if total else None,
            "examples_per_second": total / self.learn_s if self.learn_s > 0 else None,
            "train_examples": total,
            "learn_seconds": self.learn_s,
            "eval_seconds": self.eval_s,
            "accuracy_matrix": self.matrix,
            "domains": list(self.domains),
            "labels_trained": sorted(self.known),
            "curve": {"examples": self.xs, "accuracy": self.curve},
        }


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
    run = _StreamRun(learner, tests, domains)
    next_check = eval_every or 0
    with tqdm(
        total=len(stream), desc=desc, unit="ex", file=sys.stderr, disable=not progress, dynamic_ncols=True
    ) as bar:
        for bound in bounds:
            while run.pos < bound:
                batch = stream[run.pos : min(run.pos + batch_size, bound)]
                run.learn(batch, lambda r: Example(r.text, r.label, r.domain))
                bar.update(len(batch))
                if eval_every and run.pos >= next_check:
                    if run.pos < bound:  # a boundary scores anyway
                        run.score()
                    next_check = (run.pos // eval_every + 1) * eval_every
            run.matrix.append(run.score())
    return run.result()


# --------------------------------------------------------------------------- runs
