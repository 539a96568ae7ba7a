"""Supervision of an embedded broker process: one that died (exited, killed) is restarted on its
data with backoff; one that is only stopped (SIGSTOP) or slow still exists and is waited for,
never replaced; one that keeps dying is given up on with the reason."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from streaming.errors import BrokerError
from streaming.runtime import backoff

if TYPE_CHECKING:
    from streaming.broker import Broker

log = logging.getLogger(__name__)


class BrokerSupervisor:
    """Call :meth:`check` every second or so, from the thread that started the broker (the broker
    dies with that thread). Restarts within ``window_s`` are at most ``max_restarts``; past that
    :meth:`check` raises :class:`BrokerError`. ``on_restart`` runs after each restart (topics)."""

    def __init__(
        self,
        broker: Broker,
        on_restart: Callable[[Broker], None] | None = None,
        max_restarts: int = 5,
        window_s: float = 600.0,
        first_delay_s: float = 1.0,
        most_delay_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.on_restart = on_restart
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.first_delay_s, self.most_delay_s = first_delay_s, most_delay_s
        self.clock = clock
        self.restarts = 0
        self._attempts: deque[float] = deque()  # when each restart was tried, within the window
        self._failures = 0  # restarts in a row that did not bring the broker up
        self._next_try = -float("inf")
        self.last_error: str | None = None

    def check(self) -> bool:
        """Restart the broker if its process is gone (when the backoff allows); True if it did.
        Raises :class:`BrokerError` once it died more than ``max_restarts`` times in ``window_s``."""
        if self.broker.alive():
            return False
        now = self.clock()
        if now < self._next_try:
            return False
        while self._attempts and now - self._attempts[0] > self.window_s:
            self._attempts.popleft()
        if len(self._attempts) >= self.max_restarts:
            raise BrokerError(
                f"the embedded {self.broker.kind} broker died {len(self._attempts) + 1} times within "
                f"{self.window_s:g}s; giving up (last error: {self.last_error or 'it exited'})",
                self.broker.bootstrap,
            )
        self._attempts.append(now)
        log.error("the embedded %s broker on %s died: restarting it", self.broker.kind, self.broker.bootstrap)
        try:
            self.broker.restart()
        except BrokerError as exc:
            self._failures += 1
            self.last_error = str(exc)
            self._next_try = self.clock() + backoff(self._failures, self.first_delay_s, self.most_delay_s)
            log.error("restarting the embedded broker failed (next try in %.0fs): %s", self._next_try - now, exc)
            return False
        self._failures = 0
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart(self.broker)
        return True
