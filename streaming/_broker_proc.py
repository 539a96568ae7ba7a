"""Process plumbing shared by the embedded brokers: ports, the child's death signal, a clean stop,
and whether a process is merely stopped (SIGSTOP) rather than gone."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

from streaming.errors import BrokerError

log = logging.getLogger(__name__)


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def die_with_parent() -> None:
    """In the child: receive SIGTERM when the thread that started it ends (Linux's
    PR_SET_PDEATHSIG follows the starting *thread*: start long-lived children from a thread
    that lives as long as they should)."""
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


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as its parts (host 127.0.0.1 when left out)."""
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def log_sink(log_file: Path | None) -> IO[bytes] | int:
    """Where a child's output goes: appended to ``log_file``, else nowhere."""
    if log_file is None:
        return subprocess.DEVNULL
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return open(log_file, "ab")  # closed by ``spawn`` once the child holds its copy


def spawn(argv: list[str], log_file: Path | None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a broker process in its own session, output to ``log_file``, dying with its starter."""
    out = log_sink(log_file)
    try:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        if not isinstance(out, int):
            out.close()  # the child has its own copy


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; a stopped (SIGSTOP) process is continued first."""
    if proc.poll() is not None:
        return
    import signal

    try:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (``R``, ``S``, ``T`` stopped, ``Z`` zombie...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


class BrokerProcess:
    """A broker in a child process serving on ``host:port``; a kind defines :meth:`start` (which
    calls :meth:`_launch`) and the timeouts it needs."""

    kind = ""
    name = "the broker"
    start_timeout_s = 30.0
    stop_timeout_s = 10.0

    def __init__(self, address: str, log_file: Path | None = None) -> None:
        self.host, self.port = split_address(address)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float | None = None) -> Self:
        raise NotImplementedError

    def _launch(
        self, argv: list[str], ready: Callable[[], bool], timeout_s: float | None, cwd: Path | None = None
    ) -> None:
        """Start ``argv`` and wait until ``ready()``; a process that exits or a timeout raises."""
        if answers(self.host, self.port):
            raise BrokerError(f"port {self.bootstrap} is already in use", self.bootstrap)
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        self._proc = spawn(argv, self.log_file, cwd=cwd)
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                where = f"; see {self.log_file}" if self.log_file else ""
                raise BrokerError(f"{self.name} exited with code {code}{where}", self.bootstrap)
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"{self.name} did not answer on {self.bootstrap} in {timeout_s}s", self.bootstrap)
            time.sleep(0.1)
        log.info("%s listening on %s (pid %s)", self.name, self.bootstrap, self.pid)

    def alive(self) -> bool:
        """Whether the process exists (a stopped, SIGSTOPped one included)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM (a controlled shutdown), killed after ``timeout_s``."""
        if self._proc is not None:
            stop_process(self._proc, self.stop_timeout_s if timeout_s is None else timeout_s)
            self._proc = None

    def restart(self, timeout_s: float | None = None) -> Self:
        """Stop (if running) and start again on the same address (and data, for a kind that keeps any)."""
        self.stop()
        return self.start(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
