"""Shared fixtures: a real tansu broker per session and settings with random topic names."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streaming.broker import EmbeddedBroker, free_port
from streaming.kafka import ensure_topics
from streaming.settings import StreamSettings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(f"127.0.0.1:{free_port()}", log_file=log) as b:
        yield b


@pytest.fixture
def make_settings(broker: EmbeddedBroker, tmp_path: Path) -> Callable[..., StreamSettings]:
    """Settings on the session broker with a fresh topic prefix, group and state dir."""

    def make(**overrides: object) -> StreamSettings:
        run = uuid.uuid4().hex[:10]
        values: dict[str, object] = {
            "kafka_bootstrap": broker.bootstrap,
            "topic_prefix": f"t{run}",
            "consumer_group": f"g{run}",
            "state_dir": tmp_path / f"state-{run}",
        }
        values.update(overrides)
        settings = StreamSettings(**values)  # type: ignore[arg-type]
        ensure_topics(settings, settings.topics.all())
        return settings

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
