"""``streamcl bench``: its arguments and the command, the offline continual-learning benchmark
through the same learner code (heavy imports inside the command)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _bench_input(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """(rows, source) of the command; ValueError with the message for bad arguments or input."""
    from learners.bench import check_strategies
    from streaming.datasets import SCENARIOS, load_rows, scenario_rows

    for flag, value in (
        ("--train-per-domain", args.train_per_domain),
        ("--test-per-domain", args.test_per_domain),
        ("--eval-every", args.eval_every),
        ("--seeds", args.seeds),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    check_strategies(args.strategy)
    if args.scenario is not None:
        if args.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {args.scenario!r}; valid: {', '.join(sorted(SCENARIOS))}")
        return scenario_rows(args.scenario), {"scenario": args.scenario, "data": None}
    if not Path(args.data).is_file():
        raise ValueError(f"no such file: {args.data}")
    try:
        rows = load_rows(args.data)
    except OSError as exc:
        raise ValueError(str(exc)) from None
    if not rows:
        raise ValueError(f"{args.data}: no rows (the file is empty); each line needs a text and a label")
    return rows, {"scenario": None, "data": str(Path(args.data).resolve())}


def _masked(rows: list[Any], source: dict[str, Any]) -> list[Any]:
    """``rows`` as the live service would learn them: with ``STREAMCL_PII=mask`` each text is
    masked once, here, before the split; ``source`` records the setting (``pii``) for the result."""
    from dataclasses import replace

    from streaming.pii import masker_for
    from streaming.settings import StreamSettings

    stream = StreamSettings()  # invalid STREAMCL_* settings: main reports them
    source["pii"] = stream.pii
    masker = masker_for(stream)
    return rows if masker is None else [replace(r, text=masker.mask(r.text)) for r in rows]


def cmd_bench(args: argparse.Namespace) -> int:
    """The offline continual-learning benchmark (learners/bench.py); input errors exit 2."""
    from learners.bench import format_table, plot, run_bench, run_seeds

    def bad(message: str) -> int:
        print(f"streamcl: bench: {message}", file=sys.stderr)
        return 2

    try:
        rows, source = _bench_input(args)
    except (OSError, ValueError) as exc:
        return bad(str(exc))
    rows = _masked(rows, source)
    try:
        result = run_seeds(
            run_bench,
            args.seeds,
            args.seed,
            rows=rows,
            strategies=args.strategy,
            baselines=args.baselines,
            order=args.order,
            train_per_domain=args.train_per_domain,
            test_per_domain=args.test_per_domain,
            eval_every=args.eval_every,
            source=source,
            progress=True,
        )
    except ValueError as exc:
        if type(exc).__name__ == "ValidationError":
            raise  # invalid STREAMCL_* settings: main reports them
        return bad(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(result["runs"][0] if "runs" in result else result, args.plot)  # over seeds: the first seed's curves
    print(format_table(result))
    seeds = f" x {args.seeds} seeds" if args.seeds > 1 else ""
    length, seconds = result["stream_length"], result["seconds"]
    print(f"bench: {length} training examples{seeds}, {seconds:.0f}s; wrote {args.out}", end="")
    print(f" and {args.plot}" if args.plot is not None else "")
    return 1 if any("error" in r for r in result["results"].values()) else 0


def add_bench(sub: Any) -> None:
    """The ``bench`` subcommand's arguments."""
    bn = sub.add_parser(
        "bench",
        help="offline continual-learning benchmark of learner strategies on a data file or scenario",
        description="Hold out a seeded test sample per domain, stream the rest once through each strategy "
        "(each in its own process) and report accuracy matrix, forgetting, prequential accuracy and speed. "
        "Exit 2 on bad input, 1 when a strategy failed (its error is in the result).",
    )
    source = bn.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="FILE", help="a .jsonl or .csv file: text, label, optional domain and ts")
    source.add_argument("--scenario", metavar="NAME", help="a packaged dataset: sentiment-domains, news-classes, ...")
    bn.add_argument(
        "--strategy",
        action="append",
        required=True,
        metavar="NAME",
        help="a learner strategy (repeatable); 'default' is STREAMCL_STRATEGY's default",
    )
    bn.add_argument("--baselines", action="store_true", help="also run naive (lower bound) and iid (upper bound)")
    bn.add_argument("--order", choices=["domain", "time", "file"], default="domain", help="stream order")
    bn.add_argument("--train-per-domain", type=int, metavar="N", help="at most N training rows per domain")
    bn.add_argument("--test-per-domain", type=int, metavar="N", help="at most N test rows per domain (default: 1/5)")
    bn.add_argument("--eval-every", type=int, metavar="K", help="also score the test sets every K examples")
    bn.add_argument("--seed", type=int, default=0, help="seed of the split, shuffles and learners")
    bn.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="run seeds SEED .. SEED+N-1 and report each figure's mean and spread (std, min, max)",
    )
    bn.add_argument("--out", type=Path, required=True, metavar="RESULT.json", help="where to write the results")
    bn.add_argument("--plot", type=Path, metavar="RESULT.png", help="also plot per-domain accuracy over the stream")
    bn.set_defaults(func=cmd_bench)
