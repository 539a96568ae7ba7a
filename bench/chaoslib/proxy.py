"""A TCP proxy between Kafka clients and the broker that can cut every connection for a while:
open connections are closed and new ones refused, as a network partition looks to a client."""

from __future__ import annotations

import asyncio
import threading
import time

from streaming.broker import free_port


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` (host:port) from a thread of its own."""

    def __init__(self, target: str, port: int | None = None) -> None:
        host, _, tport = target.rpartition(":")
        self.target = (host or "127.0.0.1", int(tport))
        self.port = port or free_port()
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def _call(self, coro: object, timeout: float = 10.0) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            transport = w.transport
            transport.abort()  # a reset, not a polite close
        self._writers.clear()

    def cut(self, seconds: float) -> None:
        """Close every connection and refuse new ones for ``seconds`` (blocks that long)."""
        self.cuts += 1
        self._call(self._cut())
        time.sleep(seconds)
        self._call(self._listen())

    def stop(self) -> None:
        try:
            self._call(self._cut())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
