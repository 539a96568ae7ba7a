"""What ``streamcl up`` watches once the platform runs: the embedded broker it started (restarted
on its data when its process died, waited for when it is only stopped or slow) and the platform's
Ray actors (one that is dead for good ends ``streamcl up`` with the reason)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from streaming.broker import Broker, BrokerSupervisor
from streaming.errors import StreamclError
from streaming.runtime import NAMESPACE

if TYPE_CHECKING:
    from services.metrics import PlatformMetrics

log = logging.getLogger(__name__)


def lost_data_warning(broker: Broker) -> None:
    """Say loudly that a memory-only broker came back empty."""
    if broker.kind == "tansu":
        log.error(
            "DATA LOST: the embedded tansu broker on %s keeps nothing across a restart; every record it held "
            "(texts, feedback, labeled examples, models, offsets) is gone. Topics were recreated empty. Use "
            "STREAMCL_EMBEDDED_BROKER_KIND=kafka (make install) for a durable embedded broker.",
            broker.bootstrap,
        )


class PlatformSupervisor:
    """Call :meth:`check` every second or so from the thread that started the platform; it raises
    :class:`StreamclError` for a part that cannot come back."""

    def __init__(
        self,
        broker: Broker | None,
        actor_names: dict[str, str],
        recreate_topics: Callable[[], None],
        metrics: PlatformMetrics | None = None,
        actors_every_s: float = 10.0,
    ) -> None:
        self.actor_names = actor_names
        self.recreate_topics = recreate_topics
        self.metrics = metrics
        self.actors_every_s = actors_every_s
        self.brokers = BrokerSupervisor(broker, self._restarted) if broker is not None else None
        self._actors_at = time.monotonic()

    def _restarted(self, broker: Broker) -> None:
        if self.metrics is not None:
            self.metrics.broker_restarts.inc()
        lost_data_warning(broker)
        self.recreate_topics()
        log.warning("the embedded %s broker is back on %s (pid %s)", broker.kind, broker.bootstrap, broker.pid)

    def check(self) -> None:
        if self.brokers is not None:
            self.brokers.check()
        if time.monotonic() - self._actors_at >= self.actors_every_s:
            self._actors_at = time.monotonic()
            dead = self.dead_actors()
            if dead:
                raise StreamclError(f"Ray actor(s) dead for good (Ray will not restart them): {', '.join(dead)}")

    def dead_actors(self) -> list[str]:
        """The platform's actors Ray no longer knows by name: dead and not to be restarted (an actor
        Ray is restarting keeps its name)."""
        import ray

        dead = []
        for source, name in self.actor_names.items():
            try:
                ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                dead.append(f"{source} ({name})")
        return dead
