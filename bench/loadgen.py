"""A light HTTP load generator for the bench scripts, and a wait for `streamcl up`.

Each of ``concurrency`` clients keeps one HTTP/1.1 connection and sends ``POST /v1/predict``
back to back (closed loop) with ``per_request`` texts; the client is a few lines over asyncio
streams so that it takes little of the CPU the server under test also needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streaming.broker import free_port  # noqa: E402


def wait_ready(url: str, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("streamcl up exited early")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready")


@contextlib.contextmanager
def platform(env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[dict[str, int]]:
    """`streamcl up` in a child process on free ports (embedded broker); yields the ports
    once the endpoint is ready, and stops it with Ctrl-C afterwards."""
    ports = {"broker": free_port(), "api": free_port(), "metrics": free_port()}
    full = {
        **os.environ,
        "STREAMCL_EMBEDDED_BROKER": f"127.0.0.1:{ports['broker']}",
        "STREAMCL_PORT": str(ports["api"]),
        "STREAMCL_METRICS_PORT": str(ports["metrics"]),
        "STREAMCL_LABELS": "negative,neutral,positive",
        **env,
    }
    full.pop("STREAMCL_KAFKA_BOOTSTRAP", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--progress-s", "3600", *args],
        env=full,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{ports['api']}", proc)
        yield ports
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_TOKEN: list[str] = []  # the bearer token every request carries (use_token)


def use_token(token: str | None) -> None:
    """Every request :func:`load` sends carries ``token`` from now on (a configured token closes
    every /v1 call); None: no token."""
    _TOKEN[:] = [token] if token else []


def _request(port: int, path: str, body: bytes) -> bytes:
    auth = "".join(f"Authorization: Bearer {t}\r\n" for t in _TOKEN)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def load(
    port: int,
    seconds: float,
    concurrency: int,
    per_request: int,
    texts: list[str],
    on_response: Callable[[float, int, dict[str, Any] | None], None] | None = None,
) -> dict[str, Any]:
    """Closed-loop load for ``seconds``; texts/s, failures and latency percentiles.

    ``on_response(t, status, body)`` sees every response (``t`` on ``time.monotonic``)."""
    requests = []
    for i in range(0, max(len(texts), per_request * concurrency * 4), per_request):
        batch = [texts[(i + j) % len(texts)] for j in range(per_request)]
        requests.append(_request(port, "/v1/predict", json.dumps({"texts": batch}).encode()))
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0, "texts": 0}
    errors: dict[str, int] = {}

    async def client(k: int, stop: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k * 7
        while time.monotonic() < stop:
            req = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            try:
                writer.write(req)
                status, body = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                counts["failed"] += 1
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - t0)
            if status == 200:
                counts["ok"] += 1
                counts["texts"] += per_request
            else:
                counts["failed"] += 1
                errors[str(status)] = errors.get(str(status), 0) + 1
            if on_response is not None:
                try:
                    parsed = json.loads(body) if status == 200 else None
                except ValueError:
                    parsed = None
                on_response(time.monotonic(), status, parsed)
        writer.close()

    async def run() -> float:
        started = time.perf_counter()
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(k, stop) for k in range(concurrency)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "concurrency": concurrency,
        "texts_per_request": per_request,
        "seconds": round(elapsed, 1),
        "requests": counts["ok"] + counts["failed"],
        "failed_requests": counts["failed"],
        "errors": errors,
        "texts_per_s": round(counts["texts"] / elapsed, 1),
        "p50_ms": round(1000 * p50, 2) if p50 is not None else None,
        "p99_ms": round(1000 * p99, 2) if p99 is not None else None,
    }
