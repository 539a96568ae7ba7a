"""What a Serve replica runs besides HTTP and Kafka: the model follower and the batcher.

The follower long-polls the model controller, so it learns of a promotion at once (it polls
the registry pointer only while the controller cannot answer), loads a new version in a
background thread and swaps one reference, so requests never wait on a load, and retries a
version that failed to load with backoff; the batcher takes
that reference once per forward pass, so a response never mixes two versions. Nothing here
knows HTTP: failures are :mod:`._errors`. The way to Kafka is :mod:`._eventlog`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.serving._errors import NotReady, Overloaded
from streaming.errors import RegistryError
from streaming.runtime import backoff as retry_backoff

if TYPE_CHECKING:
    from learners.model import Prediction, TextClassifier
    from learners.registry import Registry

log = logging.getLogger("streamcl.serve")

PREFETCH_S = 2.0  # how often a replica looks for versions to keep warm
RETRY_FIRST_S = 1.0  # a version that failed to load is tried again after this, then twice as long...
RETRY_MAX_S = 60.0  # ...up to this
WATCH_S = PREFETCH_S  # one long-poll of the controller is held at most this long
WATCH_RETRY_S = 10.0  # after a failed long-poll, the registry is polled this long before the next try

#: ``watch(known, timeout_s)``: the serving version as soon as it differs from ``known``, else
#: after ``timeout_s`` (the model controller's ``wait_serving``); raises when it cannot answer.
Watch = Callable[[int | None, float], int | None]


def backoff(failures: int) -> float:
    """Seconds before a replica tries a version again after ``failures`` failed loads."""
    return retry_backoff(failures, RETRY_FIRST_S, RETRY_MAX_S)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The version a replica serves and its model: swapped as one reference."""

    version: int
    model: TextClassifier


class ModelFollower:
    """Keeps the serving version loaded: waits on ``watch`` (a long-poll that returns when the
    serving version changes; while it fails, the registry pointer is polled every ``poll_s``),
    loads a new version in the background and swaps one reference. ``prepare`` turns a loaded
    version into the model served (learners/quantize.py ``served_copy``). The last few loaded
    versions stay in memory, so a rollback to one of them is a swap without a load. A version
    that fails to load (a storage blip, a corrupt file) is tried again with :func:`backoff`
    while the previous one serves; ``failed`` holds the last error of each version not loaded yet."""

    def __init__(
        self,
        registry: Registry,
        poll_s: float,
        on_swap: Callable[[int], None] | None = None,
        keep: int = 3,
        prepare: Callable[[TextClassifier], TextClassifier] | None = None,
        watch: Watch | None = None,
    ) -> None:
        self.registry = registry
        self.poll_s = poll_s
        self.on_swap = on_swap
        self.keep = keep
        self.prepare = prepare
        self.watch = watch
        self.pushed = watch is not None  # False while the long-poll fails and the registry is polled
        self._watched: int | None = None  # the serving version the long-poll last answered
        self._watch_again = 0.0  # monotonic time of the next long-poll after a failed one
        self.current: Loaded | None = None
        self.failed: dict[int, str] = {}
        self._retry: dict[int, tuple[int, float]] = {}  # version: (failures in a row, next try)
        self._loaded: dict[int, TextClassifier] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next_prefetch = 0.0
        try:
            self.sync()  # a replica starts with the serving version loaded
        except Exception:
            log.exception("first model load")
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        errors = 0  # in a row: the registry itself failing is retried with backoff too
        while not self._wait(errors):
            try:
                self.sync()
                if time.monotonic() >= self._next_prefetch:
                    self._next_prefetch = time.monotonic() + PREFETCH_S
                    self.prefetch()
                errors = 0
            except Exception:
                errors += 1
                log.exception("model follower (failure %d in a row)", errors)

    def _wait(self, errors: int) -> bool:
        """Until the next look at the registry: a long-poll of the controller, else (it failed,
        or there is none) ``poll_s``, longer after errors. True once stopped."""
        if errors:
            return self._stop.wait(max(self.poll_s, backoff(errors)))
        if self.watch is not None and time.monotonic() >= self._watch_again:
            try:
                self._watched = self.watch(self._watched, WATCH_S)
            except Exception as exc:
                self._watch_again = time.monotonic() + WATCH_RETRY_S
                if self.pushed:
                    log.warning(
                        "no long-poll (%s: %s): polling the registry every %gs", type(exc).__name__, exc, self.poll_s
                    )
                self.pushed = False
            else:
                if not self.pushed:
                    log.info("long-polling the model controller again")
                self.pushed = True
                return self._stop.is_set()
        return self._stop.wait(self.poll_s)

    def _load(self, version: int) -> TextClassifier:
        model = self.registry.load_model(version)
        return self.prepare(model) if self.prepare is not None else model

    def waiting(self, version: int) -> bool:
        """Whether ``version`` failed to load and its next try is not due yet."""
        retry = self._retry.get(version)
        return retry is not None and time.monotonic() < retry[1]

    def prefetch(self) -> None:
        """Keep warm, without serving them, the versions a swap most likely goes to: the
        previous serving one (a rollback) and the newest ones (candidates the gate or an
        operator may promote), ``keep - 1`` in all."""
        state = self.registry.serving_state()
        newest = [m.version for m in reversed(self.registry.versions()) if not m.pruned]
        likely = [*state.history[-1:], *newest]
        serving = self.current.version if self.current else None
        likely = list(dict.fromkeys(v for v in likely if v != serving))[: max(0, self.keep - 1)]
        for version in likely:
            if version in self._loaded or self.waiting(version):
                continue
            try:
                model = self._load(version)
            except RegistryError:
                continue  # not an error until it is asked to serve it
            with self._lock:
                self._loaded[version] = model
                self._trim()

    def _trim(self) -> None:
        serving = self.current.version if self.current else None
        while len(self._loaded) > self.keep:
            oldest = next(v for v in self._loaded if v != serving)
            self._loaded.pop(oldest)

    def sync(self) -> None:
        """Serve the registry's serving version now if it is not served yet (loads it here);
        a version that failed to load is tried again once its backoff has passed."""
        with self._lock:
            wanted = self.registry.serving()
            if wanted is None or (self.current and self.current.version == wanted) or self.waiting(wanted):
                return
            model = self._loaded.pop(wanted, None)
            if model is None:
                try:
                    model = self._load(wanted)
                except Exception as exc:  # RegistryError, or storage failing in any other way
                    self._load_failed(wanted, exc)
                    return
            self.failed.pop(wanted, None)
            self._retry.pop(wanted, None)
            self._loaded[wanted] = model  # most recently used last
            self.current = Loaded(wanted, model)  # the swap: one reference
            self._trim()
        log.info("now serving version %d", wanted)
        if self.on_swap:
            self.on_swap(wanted)

    def _load_failed(self, version: int, exc: Exception) -> None:
        failures = self._retry.get(version, (0, 0.0))[0] + 1
        wait = backoff(failures)
        self._retry[version] = (failures, time.monotonic() + wait)
        self.failed[version] = f"{type(exc).__name__}: {exc}"
        keeping = self.current.version if self.current else None
        log.error(
            "cannot load version %d (failure %d), keeping %s; next try in %.0fs: %s",
            *(version, failures, keeping, wait, self.failed[version]),
        )

    def stop(self) -> None:
        self._stop.set()


Pending = tuple[list[str], "asyncio.Future[tuple[int, list[Prediction]]]", float]  # texts, answer, deadline


class Batcher:
    """Dynamic batching across concurrent requests.

    Requests that arrive while a forward pass runs wait and then go together in the next one
    (up to ``max_texts`` texts); a lone request runs at once, so batching adds no wait at low
    load. Tokenization and the forward pass run in a worker thread, off the event loop. Each
    batch takes the serving model once, so a response never mixes two versions. With no model
    loaded yet, requests fail with :class:`NotReady`. A request that waited longer than
    ``max_wait_s`` for its turn is answered :class:`Overloaded` (503) instead of being computed,
    and one whose client is gone is skipped: when the replica falls behind (a starved CPU),
    it sheds what nobody will read instead of working on it, and every request is answered
    within the bound.
    """

    def __init__(
        self,
        current: Callable[[], Loaded | None],
        max_texts: int,
        executor: ThreadPoolExecutor | None = None,
        max_wait_s: float = 8.0,
    ) -> None:
        self.current = current
        self.max_texts = max_texts
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.shed = 0  # requests answered Overloaded because they waited too long
        self._pending: list[Pending] = []
        self._worker: asyncio.Task[None] | None = None
        # one inference thread (shared by a replica's models): torch's OpenMP pool is per
        # calling thread, and several pools on few cores spin against each other
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="inference")

    async def predict(self, texts: list[str]) -> tuple[int, list[Prediction]]:
        """The serving version and one prediction per text, in order."""
        future: asyncio.Future[tuple[int, list[Prediction]]] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future, time.monotonic() + self.max_wait_s))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[Pending]:
        taken: list[Pending] = []
        n, now = 0, time.monotonic()
        while self._pending and (not taken or n + len(self._pending[0][0]) <= self.max_texts):
            item = self._pending.pop(0)
            texts, future, deadline = item
            if future.done():  # the client is gone: nobody reads the answer
                continue
            if now > deadline:
                self.shed += 1
                future.set_exception(Overloaded(f"waited over {self.max_wait_s:g}s for the model; retry"))
                continue
            taken.append(item)
            n += len(texts)
        return taken

    async def _drain(self) -> None:
        while self._pending:
            taken = self._take()
            if not taken:  # every one left was shed or gone
                continue
            loaded = self.current()
            try:
                if loaded is None:
                    raise NotReady("no model loaded yet")
                texts = [t for item, _, _ in taken for t in item]
                preds = await asyncio.get_running_loop().run_in_executor(self._executor, loaded.model.predict, texts)
            except Exception as exc:
                for _, future, _ in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            i = 0
            for item, future, _ in taken:
                if not future.done():  # a cancelled request (client gone) is skipped
                    future.set_result((loaded.version, preds[i : i + len(item)]))
                i += len(item)
