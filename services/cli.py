"""``streamcl``: start the platform, the broker alone, or replay a data file.

Heavy imports (torch, Ray) happen inside the commands, so ``streamcl --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from streaming.errors import StreamclError


def _progress_line(platform_urls: dict[str, str], demo: Any) -> str:
    from streaming.metrics import sample_sum, sample_value

    try:
        with urllib.request.urlopen(platform_urls["metrics"], timeout=5) as r:
            text = r.read().decode()
    except OSError:
        text = ""

    def val(name: str, **labels: str) -> str:
        v = sample_value(text, name, labels) if text else None
        return "-" if v is None else (f"{v:.3f}" if 0 < v < 1 else f"{v:.0f}")

    parts = []
    if demo is not None:
        parts.append(f"demo sent {demo.sent} texts, {demo.feedback} labels (domain {demo.domain})")
    parts += [
        f"joined {val('streamcl_join_joined_total')}",
        f"trained {val('streamcl_learner_examples_trained_total')}",
        f"serving v{val('streamcl_model_version', role='serving')}",
        f"prequential acc {val('streamcl_prequential_accuracy')}",
        f"live acc {val('streamcl_live_accuracy')}",
        f"drift detections {sample_sum(text, 'streamcl_drift_detected_total') or 0:.0f}",
        f"dlq {val('streamcl_events_consumed_total', outcome='dlq')}",
    ]
    return " | ".join(parts)


def cmd_up(args: argparse.Namespace) -> int:
    from services.platform import Platform, wait_http

    overrides: dict[str, Any] = {}
    if args.port:
        overrides["serve"] = {"port": args.port}
    if args.demo:
        from services.demo import DEMOS

        if args.demo not in DEMOS:
            print(f"streamcl: unknown demo {args.demo!r}; valid: {', '.join(DEMOS)}", file=sys.stderr)
            return 2
        # The demo's labels are known up front, so its first version can answer with them.
        from learners.settings import LearnerSettings

        if not LearnerSettings().labels:
            overrides["learner"] = {"labels": ["negative", "neutral", "positive"]}
    platform = Platform.from_env(state_dir=args.state_dir, **overrides)
    platform.with_prometheus = args.prometheus
    stop = threading.Event()
    running = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"\nstreamcl: stopping ({signal.Signals(signum).name})", flush=True)
        if not running.is_set() and not stop.is_set():
            stop.set()  # still starting: abandon the start once (the finally stops what runs)
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"streamcl: starting (state in {platform.stream.state_dir})", flush=True)
    demo = None
    try:
        platform.start()
        # ray.init installs its own SIGTERM handler (which exits at once): ours must win.
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        wait_http(platform.urls["api"] + "/readyz")
        running.set()
        print("streamcl: ready", flush=True)
        print(f"  API      {platform.urls['api']}  (POST /v1/predict, /v1/feedback; GET /v1/model)", flush=True)
        print(f"  metrics  {platform.urls['metrics']}", flush=True)
        print(f"  kafka    {platform.urls['kafka']}  (topics {platform.stream.topic_prefix}.*)", flush=True)
        for spec in platform.models[1:]:
            print(
                f"  model {spec.name!r}  {platform.urls['api']}/v1/models/{spec.name}/predict  "
                f"(topics {spec.stream.topic_prefix}.*)",
                flush=True,
            )
        if "prometheus" in platform.urls:
            print(
                f"  prometheus {platform.urls['prometheus']}  (scraping the metrics URL, alert rules loaded)",
                flush=True,
            )
        if args.demo:
            from services.demo import Demo

            token = platform.serve_settings.api_token
            demo = Demo(args.demo, platform.urls["api"], api_token=token.get_secret_value() if token else None).start()
            print(f"streamcl: demo {args.demo!r} sending {len(demo.rows)} tweets per round", flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                print("streamcl: duration reached", flush=True)
                break
            stop.wait(min(args.progress_s, max(0.1, (deadline or float("inf")) - time.monotonic())))
            if not stop.is_set():
                print(_progress_line(platform.urls, demo), flush=True)
    except StreamclError as exc:
        print(f"streamcl: {exc}", file=sys.stderr)
        return 1
    finally:
        if demo is not None:
            demo.stop()
        platform.stop()
        print("streamcl: stopped", flush=True)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streaming.broker import EmbeddedBroker
    from streaming.settings import StreamSettings

    address = args.address or StreamSettings().embedded_broker
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with EmbeddedBroker(address) as broker:
            print(f"streamcl: broker listening on {broker.bootstrap} (memory storage; Ctrl-C stops it)", flush=True)
            while not stop.wait(1.0):
                if not broker.alive():
                    print("streamcl: broker exited", file=sys.stderr)
                    return 1
    except StreamclError as exc:
        print(f"streamcl: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streaming.datasets import load_rows
    from streaming.kafka import ensure_topics
    from streaming.replay import replay
    from streaming.settings import StreamSettings

    try:
        rows = load_rows(args.file)
    except (OSError, ValueError) as exc:
        print(f"streamcl: {exc}", file=sys.stderr)
        return 2
    settings = StreamSettings()
    try:
        ensure_topics(settings, settings.topics.all())
        report = replay(
            settings,
            rows,
            source=str(Path(args.file).resolve()),
            rate=args.rate,
            label_delay_s=args.label_delay,
            progress=lambda n, f: print(f"\rreplay: {n}/{len(rows)} texts, {f} labels", end="", flush=True),
        )
    except StreamclError as exc:
        print(f"\nstreamcl: {exc}", file=sys.stderr)
        return 1
    print(f"\nreplay: sent {report.texts} texts and {report.feedback} labels in {report.seconds:.1f}s")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """Start (or find) the platform's actors on a Ray cluster, then watch them until stopped."""
    import ray

    from services.platform import Platform

    platform = Platform.from_env()
    if not platform.platform.ray_address:
        print("streamcl: workers needs STREAMCL_RAY_ADDRESS (e.g. ray://head-svc:10001)", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    platform.start_workers()
    print(f"streamcl: workers running on {platform.platform.ray_address}: {', '.join(platform.actors)}", flush=True)
    failures = 0
    while not stop.wait(args.check_s):
        try:
            actors = [a for name, a in platform.actors.items() if name != "metrics"]
            status = ray.get([a.status.remote() for a in actors], timeout=60)
            failures = 0
            print("streamcl: " + "; ".join(f"{s.get('errors', 0)} errors" for s in status), flush=True)
        except Exception as exc:  # an actor restarting (Ray restarts it) or the cluster gone
            failures += 1
            print(f"streamcl: actors not answering ({type(exc).__name__}), {failures} times", flush=True)
            if failures >= 3:  # the cluster is gone or was replaced: exit, the Deployment restarts us
                return 1
    if args.stop_actors:
        platform.stop()
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    import os

    from services.client import ApiCallError, Client
    from services.settings import ServeSettings

    serve = ServeSettings()
    url = args.url or os.environ.get("STREAMCL_API_URL") or f"http://{serve.host}:{serve.port}"
    token = serve.admin_token.get_secret_value() if serve.admin_token else None
    api = Client(url, serve.api_token.get_secret_value() if serve.api_token else None, token, model=args.model)
    try:
        if args.action == "list":
            out: Any = api.versions()
            if not args.json:
                for m in out:
                    flag = "*" if m.get("serving") else " "
                    acc = m.get("metrics", {}).get("average_accuracy")
                    shown = f"{acc:.3f}" if isinstance(acc, (int, float)) else "-"
                    reason = (m.get("reason") or m.get("note") or "")[:70]
                    print(
                        f"{flag} v{m['version']:<5} {m.get('status', ''):<11} parent {m.get('parent')!s:<5} "
                        f"acc {shown:<6} {reason}"
                    )
                return 0
        elif args.action == "promote":
            out = api.promote(args.version)
        elif args.action == "rollback":
            out = api.rollback(args.version)
        elif args.action == "pin":
            out = api.pin(args.version)
        else:
            out = api.unpin()
    except ApiCallError as exc:
        print(f"streamcl: {exc.status} {exc.error}: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """The offline continual-learning benchmark (learners/bench.py); input errors exit 2."""
    from learners.bench import check_strategies, format_table, plot, run_bench
    from streaming.datasets import SCENARIOS, load_rows, scenario_rows

    def bad(message: str) -> int:
        print(f"streamcl: bench: {message}", file=sys.stderr)
        return 2

    for flag, value in (
        ("--train-per-domain", args.train_per_domain),
        ("--test-per-domain", args.test_per_domain),
        ("--eval-every", args.eval_every),
    ):
        if value is not None and value < 1:
            return bad(f"{flag} must be at least 1, got {value}")
    try:
        check_strategies(args.strategy)
    except ValueError as exc:
        return bad(str(exc))
    if args.scenario is not None:
        if args.scenario not in SCENARIOS:
            return bad(f"unknown scenario {args.scenario!r}; valid: {', '.join(sorted(SCENARIOS))}")
        source: dict[str, Any] = {"scenario": args.scenario, "data": None}
    else:
        if not Path(args.data).is_file():
            return bad(f"no such file: {args.data}")
        source = {"scenario": None, "data": str(Path(args.data).resolve())}
    try:
        rows = scenario_rows(args.scenario) if args.scenario is not None else load_rows(args.data)
    except (OSError, ValueError) as exc:
        return bad(str(exc))
    try:
        result = run_bench(
            rows,
            args.strategy,
            baselines=args.baselines,
            order=args.order,
            train_per_domain=args.train_per_domain,
            test_per_domain=args.test_per_domain,
            seed=args.seed,
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
        plot(result, args.plot)
    print(format_table(result))
    print(f"bench: {result['stream_length']} training examples, {result['seconds']:.0f}s; wrote {args.out}", end="")
    print(f" and {args.plot}" if args.plot is not None else "")
    return 1 if any("error" in r for r in result["results"].values()) else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamcl", description="Event-driven continual learning for text models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole platform on this machine")
    up.add_argument("--demo", metavar="NAME", help="also run a real-data demo application (sentiment-drift)")
    up.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    up.add_argument("--state-dir", type=Path, metavar="DIR", help="keep registry and checkpoints here")
    up.add_argument("--port", type=int, help="HTTP port (default 8000, STREAMCL_PORT)")
    up.add_argument(
        "--prometheus", action="store_true", help="also start a local Prometheus scraping the platform (port 9095)"
    )
    up.add_argument("--progress-s", type=float, default=10.0, help="seconds between progress lines")
    up.set_defaults(func=cmd_up)

    br = sub.add_parser("broker", help="run the embedded Kafka-compatible broker alone")
    br.add_argument("--address", help="host:port (default 127.0.0.1:9092, STREAMCL_EMBEDDED_BROKER)")
    br.set_defaults(func=cmd_broker)

    rp = sub.add_parser("replay", help="publish a JSONL/CSV file as texts, then feedback")
    rp.add_argument("file", help="rows with text, label, optional domain and ts")
    rp.add_argument("--rate", type=float, help="texts per second (default: as fast as possible)")
    rp.add_argument("--label-delay", type=float, default=0.0, metavar="S", help="seconds before each label")
    rp.set_defaults(func=cmd_replay)

    wk = sub.add_parser("workers", help="start the actors on a Ray cluster (STREAMCL_RAY_ADDRESS) and watch them")
    wk.add_argument("--check-s", type=float, default=10.0, help="seconds between health checks")
    wk.add_argument("--stop-actors", action="store_true", help="stop the actors on exit (default: they keep running)")
    wk.set_defaults(func=cmd_workers)

    md = sub.add_parser("model", help="list versions; promote, roll back, pin, unpin (admin token)")
    md.add_argument("action", choices=["list", "promote", "rollback", "pin", "unpin"])
    md.add_argument("version", nargs="?", type=int, help="version (promote: required; rollback/pin: optional)")
    md.add_argument("--url", help="API URL (default http://STREAMCL_HOST:STREAMCL_PORT or STREAMCL_API_URL)")
    md.add_argument("--json", action="store_true", help="list: print JSON")
    md.add_argument("--model", metavar="NAME", help="a named model (STREAMCL_MODELS); default: the default model")
    md.set_defaults(func=cmd_model)

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
    bn.add_argument("--out", type=Path, required=True, metavar="RESULT.json", help="where to write the results")
    bn.add_argument("--plot", type=Path, metavar="RESULT.png", help="also plot per-domain accuracy over the stream")
    bn.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # pydantic ValidationError of settings, etc.
        if type(exc).__name__ == "ValidationError":
            print(f"streamcl: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
