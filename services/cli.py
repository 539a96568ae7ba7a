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

from services._cli_audit import add_forget, cmd_history
from services._cli_bench import add_bench
from streaming.errors import StreamclError


def _progress_line(platform_urls: dict[str, str], demo: Any, metrics_token: Any = None) -> str:
    from streaming.metrics import sample_sum, sample_value

    headers = {"Authorization": f"Bearer {metrics_token.get_secret_value()}"} if metrics_token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(platform_urls["metrics"], headers=headers), timeout=5) as r:
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


def _up_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    """Settings ``streamcl up``'s flags override; None for an unknown demo (reported)."""
    overrides: dict[str, Any] = {}
    if args.port:
        overrides["serve"] = {"port": args.port}
    if args.demo:
        from services.demo import DEMOS

        if args.demo not in DEMOS:
            print(f"streamcl: unknown demo {args.demo!r}; valid: {', '.join(DEMOS)}", file=sys.stderr)
            return None
        # The demo's labels are known up front, so its first version can answer with them.
        from learners.settings import LearnerSettings

        if not LearnerSettings().labels:
            overrides["learner"] = {"labels": ["negative", "neutral", "positive"]}
    return overrides


def demo_token(serve: Any) -> str | None:
    """The token ``streamcl up --demo`` predicts and sends feedback with: STREAMCL_API_TOKEN, else
    the first STREAMCL_TOKENS_FILE entry with both roles; None when no token is configured (the
    API is open). :class:`ConfigError` when tokens close the API but none has both roles."""
    from streaming.errors import ConfigError

    if serve.api_token is not None:
        return str(serve.api_token.get_secret_value())
    entries = json.loads(serve.tokens_file.read_text("utf-8")) if serve.tokens_file is not None else {}
    for entry in entries.values():  # checked at start-up (ServeSettings)
        if {"predict", "feedback"} <= set(entry["roles"]):
            return str(entry["token"])
    if serve.admin_token is None and not entries:
        return None
    raise ConfigError(
        "--demo predicts and sends feedback, and the configured tokens close /v1 to callers without one: "
        "set STREAMCL_API_TOKEN, or add a STREAMCL_TOKENS_FILE entry with the roles predict and feedback"
    )


def _print_urls(platform: Any) -> None:
    urls = platform.urls
    print("streamcl: ready", flush=True)
    print(f"  API      {urls['api']}  (POST /v1/predict, /v1/feedback; GET /v1/model)", flush=True)
    print(f"  metrics  {urls['metrics']}", flush=True)
    print(f"  kafka    {urls['kafka']}  (topics {platform.stream.topic_prefix}.*)", flush=True)
    for spec in platform.models[1:]:
        where = f"{urls['api']}/v1/models/{spec.name}/predict"
        print(f"  model {spec.name!r}  {where}  (topics {spec.stream.topic_prefix}.*)", flush=True)
    if "prometheus" in urls:
        print(f"  prometheus {urls['prometheus']}  (scraping the metrics URL, alert rules loaded)", flush=True)


def _watch(platform: Any, demo: Any, stop: threading.Event, duration: float | None, progress_s: float) -> None:
    """Supervise the platform every second (raises :class:`StreamclError` for a part that cannot
    come back) and print a progress line every ``progress_s``, until stopped or ``duration`` is over."""
    now = time.monotonic()
    deadline = now + duration if duration else None
    next_line = now + progress_s
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            print("streamcl: duration reached", flush=True)
            break
        stop.wait(max(0.05, min(1.0, next_line - time.monotonic(), (deadline or float("inf")) - time.monotonic())))
        if stop.is_set():
            break
        platform.supervise()
        if time.monotonic() >= next_line:
            next_line = time.monotonic() + progress_s
            print(_progress_line(platform.urls, demo, platform.serve_settings.metrics_token), flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    from services.platform import Platform, wait_http

    overrides = _up_overrides(args)
    if overrides is None:
        return 2
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
        platform.serve_settings.check_listener()  # before anything starts
        token = demo_token(platform.serve_settings) if args.demo else None
        platform.start()
        # ray.init installs its own SIGTERM handler (which exits at once): ours must win.
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        wait_http(platform.urls["api"] + "/readyz")
        running.set()
        _print_urls(platform)
        if args.demo:
            from services.demo import Demo

            demo = Demo(args.demo, platform.urls["api"], api_token=token).start()
            print(f"streamcl: demo {args.demo!r} sending {len(demo.rows)} tweets per round", flush=True)
        _watch(platform, demo, stop, args.duration, args.progress_s)
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
    from streaming.broker import start_embedded
    from streaming.settings import StreamSettings

    settings = StreamSettings()
    address = args.address or settings.embedded_broker
    kind = args.kind or settings.embedded_broker_kind
    data_dir = Path(args.data_dir) if args.data_dir else settings.state_dir / "kafka"
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        broker = start_embedded(kind, address, data_dir, data_dir / "broker.log" if kind == "kafka" else None)
    except StreamclError as exc:
        print(f"streamcl: {exc}", file=sys.stderr)
        return 1
    try:
        where = f"Apache Kafka, data in {data_dir}" if kind == "kafka" else "tansu, memory storage"
        print(f"streamcl: broker listening on {broker.bootstrap} ({where}; Ctrl-C stops it)", flush=True)
        while not stop.wait(1.0):
            if not broker.alive():
                print("streamcl: broker exited", file=sys.stderr)
                return 1
    finally:
        broker.stop()
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

    if args.action == "history":
        return cmd_history(args)
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


def _add_up(sub: Any) -> None:
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


def _add_tools(sub: Any) -> None:
    """``broker``, ``replay``, ``workers`` and ``model``."""
    br = sub.add_parser("broker", help="run the embedded Kafka-compatible broker alone")
    br.add_argument("--address", help="host:port (default 127.0.0.1:9092, STREAMCL_EMBEDDED_BROKER)")
    br.add_argument(
        "--kind", choices=["kafka", "tansu"], help="Apache Kafka or tansu (default STREAMCL_EMBEDDED_BROKER_KIND)"
    )
    br.add_argument("--data-dir", help="Kafka's data (default STREAMCL_STATE_DIR/kafka); kept across restarts")
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

    md = sub.add_parser("model", help="list versions; promote, roll back, pin, unpin (admin token); history")
    md.add_argument("action", choices=["list", "promote", "rollback", "pin", "unpin", "history"])
    md.add_argument("version", nargs="?", type=int, help="version (promote: required; rollback/pin: optional)")
    md.add_argument("--url", help="API URL (default http://STREAMCL_HOST:STREAMCL_PORT or STREAMCL_API_URL)")
    md.add_argument("--json", action="store_true", help="list, history: print JSON")
    md.add_argument("--model", metavar="NAME", help="a named model (STREAMCL_MODELS); default: the default model")
    md.set_defaults(func=cmd_model)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamcl", description="Event-driven continual learning for text models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True)

    _add_up(sub)
    _add_tools(sub)
    add_bench(sub)
    add_forget(sub)
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
