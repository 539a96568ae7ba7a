"""Failpoints for chaos tests: a named point in the code where a process can be made to die
as if killed with ``kill -9``, once, to test recovery at that exact moment.

Armed only by the environment, read once at import: ``STREAMCL_FAILPOINTS`` (comma-separated
names) and ``STREAMCL_FAILPOINTS_DIR`` (a folder; default: the working directory). An armed
point whose ``<dir>/<name>.fired`` does not exist creates it, logs an ERROR line and exits
with status 137 at once (no cleanup, no flush: ``os._exit``). With the variable unset a
failpoint is one set lookup. The names in use:

- ``learner.after_registry_write``: a version is durable, its ModelEvent not yet published;
- ``learner.after_model_event``: the ModelEvent is acknowledged, the offsets not yet committed;
- ``controller.before_pointer_write``: the gate promoted a version, the serving pointer not yet written;
- ``joiner.after_send``: LabeledExamples are acknowledged, the checkpoint and offsets not yet written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["ARMED", "EXIT_STATUS", "failpoint"]

log = logging.getLogger(__name__)

#: The exit status of a process killed by SIGKILL, as a shell reports it.
EXIT_STATUS = 137
#: The failpoints armed in this process (``STREAMCL_FAILPOINTS`` at import).
ARMED = frozenset(n.strip() for n in os.environ.get("STREAMCL_FAILPOINTS", "").split(",") if n.strip())
_DIR = Path(os.environ.get("STREAMCL_FAILPOINTS_DIR") or ".")


def failpoint(name: str) -> None:
    """Die here (``os._exit(137)``) when ``name`` is armed and has not fired yet in ``_DIR``."""
    if name not in ARMED:
        return
    marker = _DIR / f"{name}.fired"
    try:
        _DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one process of many wins
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    os.close(fd)
    log.error("FAILPOINT %s: process %d exits with status %d now", name, os.getpid(), EXIT_STATUS)
    for handler in logging.getLogger().handlers:  # the ERROR line must reach the log before the exit
        handler.flush()
    os._exit(EXIT_STATUS)
