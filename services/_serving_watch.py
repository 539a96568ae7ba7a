"""A long-poll on the serving pointer: replicas learn of a promotion the moment the model
controller writes it, instead of polling the registry (services/serving/_runtime.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

LONG_POLL_MAX_S = 30.0  # the longest one wait is held

_ATTACH = threading.Lock()


class ServingWatch:
    """Wakes every waiter when the serving pointer is rewritten (:meth:`changed`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._changes = 0

    def changed(self) -> None:
        """The serving pointer was rewritten: wake every waiter."""
        with self._cond:
            self._changes += 1
            self._cond.notify_all()

    def wait(self, read: Callable[[], int | None], known: int | None, timeout_s: float) -> int | None:
        """``read()`` (the serving version) as soon as it differs from ``known``, else after
        ``timeout_s`` (at most :data:`LONG_POLL_MAX_S`). A change made while ``read`` runs is
        not missed: the count of changes is taken before it."""
        with self._cond:
            seen = self._changes
        current = read()
        if current != known:
            return current
        with self._cond:
            self._cond.wait_for(lambda: self._changes != seen, max(0.0, min(timeout_s, LONG_POLL_MAX_S)))
        return read()


def watch_of(owner: object) -> ServingWatch:
    """The watch attached to ``owner``, created on first use (once, whichever thread asks first)."""
    with _ATTACH:
        watch = owner.__dict__.get("_serving_watch")
        if watch is None:
            watch = owner.__dict__["_serving_watch"] = ServingWatch()
        return watch


__all__ = ["LONG_POLL_MAX_S", "ServingWatch", "watch_of"]
