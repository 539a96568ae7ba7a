"""Shared fixtures: real embedded brokers per session (Apache Kafka unless
``STREAMCL_TEST_BROKER_KIND=tansu``) and settings with random topic names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streaming.broker import Broker, free_port, start_embedded
from streaming.kafka import ensure_topics
from streaming.settings import StreamSettings

#: The kind of the session ``broker`` the integration tests run on.
BROKER_KIND = os.environ.get("STREAMCL_TEST_BROKER_KIND", "kafka")


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Broker]]:
    """The session's broker of a kind (``kafka`` or ``tansu``), started on first use, stopped at the end."""
    started: dict[str, Broker] = {}

    def get(kind: str) -> Broker:
        if kind not in started:
            folder = tmp_path_factory.mktemp(f"broker-{kind}")
            address = f"127.0.0.1:{free_port()}"
            started[kind] = start_embedded(kind, address, folder / "kafka", folder / "broker.log")  # type: ignore[arg-type]
        return started[kind]

    yield get
    for b in started.values():
        b.stop()


@pytest.fixture(scope="session")
def broker(embedded_broker: Callable[[str], Broker]) -> Broker:
    return embedded_broker(BROKER_KIND)


def settings_on(broker: Broker, folder: Path, **overrides: object) -> StreamSettings:
    """Settings on ``broker`` with a fresh topic prefix, group and state dir (topics created)."""
    run = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "kafka_bootstrap": broker.bootstrap,
        "topic_prefix": f"t{run}",
        "consumer_group": f"g{run}",
        "state_dir": folder / f"state-{run}",
    }
    values.update(overrides)
    settings = StreamSettings(**values)  # type: ignore[arg-type]
    ensure_topics(settings, settings.topics.all())
    return settings


@pytest.fixture
def make_settings(broker: Broker, tmp_path: Path) -> Callable[..., StreamSettings]:
    """Settings on the session broker with a fresh topic prefix, group and state dir."""

    def make(**overrides: object) -> StreamSettings:
        return settings_on(broker, tmp_path, **overrides)

    return make


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def generator():
    """deploy/generate.py as a module (dashboards, generated copies)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("streamcl_deploy_generate", ROOT / "deploy" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def interrupt():
    """Stop a `streamcl up` subprocess as Ctrl-C would (killed after 120 s); its exit code."""
    import signal
    import subprocess

    def stop(proc: subprocess.Popen) -> int:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    return stop
