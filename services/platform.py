"""The whole platform on one machine (or on a Ray cluster): broker, topics, Ray, metrics,
joiner, learner, controller and the Serve endpoint, started in order and stopped cleanly."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from learners.settings import LearnerSettings
from services._factories import _controller, _joiner, _learner, _monitor
from services._supervision import PlatformSupervisor
from services.models import ModelSpec, model_specs
from services.settings import MonitorSettings, PlatformSettings, ServeSettings
from streaming.broker import Broker, start_embedded
from streaming.errors import ConfigError, StreamclError
from streaming.kafka import ensure_topics
from streaming.runtime import AGGREGATOR_NAME, NAMESPACE, MetricsPusher, ServiceHost
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)

APP_NAME = "streamcl"


@dataclass
class Platform:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent)."""

    stream: StreamSettings
    learner: LearnerSettings
    serve_settings: ServeSettings
    platform: PlatformSettings
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    ephemeral_state: bool = False
    with_prometheus: bool = False
    broker: Broker | None = None
    prometheus: Any = None
    actors: dict[str, Any] = field(default_factory=dict)
    #: each actor's Ray name, by source name (what the supervisor looks up)
    actor_names: dict[str, str] = field(default_factory=dict)
    supervisor: PlatformSupervisor | None = None
    pusher: MetricsPusher | None = None
    models: list[ModelSpec] = field(default_factory=list)
    serve_enabled: bool = True
    detached: bool = False
    urls: dict[str, str] = field(default_factory=dict)
    #: how long :meth:`start` waits for every service to be built (they keep retrying after)
    build_timeout_s: float = 300.0

    @classmethod
    def from_env(cls, state_dir: Path | None = None, **overrides: Any) -> Platform:
        """Settings from the environment; with the embedded broker and no ``state_dir``, a
        fresh temporary state directory (the broker forgets everything when it stops)."""
        stream = StreamSettings(**overrides.pop("stream", {}))
        ephemeral = False
        if state_dir is not None:
            stream = stream.model_copy(update={"state_dir": Path(state_dir).resolve()})
        elif stream.kafka_bootstrap is None and "STREAMCL_STATE_DIR" not in os.environ:
            stream = stream.model_copy(update={"state_dir": Path(tempfile.mkdtemp(prefix="streamcl-state-"))})
            ephemeral = True
        else:
            stream = stream.model_copy(update={"state_dir": stream.state_dir.resolve()})
        return cls(
            stream,
            LearnerSettings(**overrides.pop("learner", {})),
            ServeSettings(**overrides.pop("serve", {})),
            PlatformSettings(**overrides.pop("platform", {})),
            MonitorSettings(**overrides.pop("monitor", {})),
            ephemeral_state=ephemeral,
        )

    def __post_init__(self) -> None:
        if not self.models:
            self.models = model_specs(self.stream, self.learner, self.platform.models)

    def start(self) -> Platform:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def start_workers(self) -> Platform:
        """On a Ray cluster whose Serve app is deployed separately (KubeRay's RayService):
        the metrics aggregator (on the head node, where it is scraped) and the joiner, learner,
        controller and monitor as detached named actors, reused when they already run."""
        self.serve_enabled = False
        self.detached = True
        self._start()
        return self

    def _start(self) -> None:
        from learners.registry import registry_for
        from learners.versioning import bootstrap_registry

        if not self.platform.ray_address:
            self.check_cpus()
        self._start_broker()
        self._init_ray()
        self._start_aggregator()
        for spec in self.models:
            bootstrap_registry(registry_for(spec.stream, spec.learner), spec.learner)
            self._start_services(spec)
        self._wait_built()
        if self.serve_enabled:
            self._start_serve()
        self.supervisor = PlatformSupervisor(
            self.broker, self.actor_names, self._ensure_topics, getattr(self.pusher, "metrics", None)
        )

    def supervise(self) -> None:
        """One round of supervision, from the thread that started the platform (its broker dies
        with that thread): a dead broker restarted, a part that cannot come back raised as
        :class:`StreamclError` with the reason."""
        if self.supervisor is not None:
            self.supervisor.check()

    def _wait_built(self) -> None:
        """Wait until every service actor has built its service (each retries with backoff while
        its construction fails); past ``build_timeout_s``, fail with each one's last error."""
        import ray

        deadline = time.monotonic() + self.build_timeout_s
        waiting = {name: a for name, a in self.actors.items() if name != "metrics"}
        while True:
            states = dict(zip(waiting, ray.get([a.status.remote() for a in waiting.values()]), strict=True))
            waiting = {name: waiting[name] for name, st in states.items() if not st.get("built", True)}
            if not waiting:
                return
            if time.monotonic() > deadline:
                why = "; ".join(f"{name}: {states[name].get('last_error')}" for name in waiting)
                raise StreamclError(f"not up after {self.build_timeout_s:g}s: {why}")
            time.sleep(0.5)

    def _start_broker(self) -> None:
        """The embedded broker unless a bootstrap server is set (Kafka's data in ``<state dir>/kafka``),
        and every model's topics."""
        s = self.stream
        s.state_dir.mkdir(parents=True, exist_ok=True)
        if s.kafka_bootstrap is None:
            self.broker = start_embedded(
                s.embedded_broker_kind, s.embedded_broker, s.state_dir / "kafka", s.state_dir / "broker.log"
            )
            self.urls["kafka"] = self.broker.bootstrap
        else:
            self.urls["kafka"] = s.kafka_bootstrap
        self._ensure_topics()

    def _ensure_topics(self) -> None:
        for spec in self.models:
            ensure_topics(spec.stream, spec.stream.topics.all())

    def _init_ray(self) -> None:
        """Join the configured Ray cluster, or start a local Ray (unless one runs already)."""
        import ray

        p = self.platform
        if ray.is_initialized():
            return
        if not p.ray_address:
            serve_ingress_environment(self.serve_settings.serve_ingress)
        kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
        if p.ray_address:
            ray.init(address=p.ray_address, **kwargs)
        else:
            ray.init(num_cpus=p.ray_num_cpus, include_dashboard=False, **kwargs)

    def _placement(self) -> dict[str, Any]:
        """Actor lifetime options: detached and reused on a cluster, owned by this driver locally."""
        return {"lifetime": "detached", "get_if_exists": True} if self.detached else {"lifetime": None}

    def _start_aggregator(self) -> None:
        """The metrics aggregator actor (on the head node when detached, where it is scraped)."""
        import ray

        from services.metrics_server import MetricsAggregator

        aggregator = (
            ray.remote(MetricsAggregator)
            .options(
                name=AGGREGATOR_NAME,
                namespace=NAMESPACE,
                num_cpus=0,
                max_restarts=-1,
                **self._placement(),
                **({"resources": {"node:__internal_head__": 0.001}} if self.detached else {}),
            )
            .remote(
                self.serve_settings.metrics_host,
                self.serve_settings.metrics_port,
                [m.name for m in self.models],
                _secret(self.serve_settings.metrics_token),
            )
        )
        self.actors["metrics"] = aggregator
        self.actor_names["metrics"] = AGGREGATOR_NAME
        self.urls["metrics"] = str(ray.get(aggregator.address.remote()))  # type: ignore[attr-defined]
        from prometheus_client import CollectorRegistry

        from services.metrics import PlatformMetrics

        self.pusher = MetricsPusher(PlatformMetrics(CollectorRegistry()), "platform", interval_s=5.0)

    def _start_services(self, spec: ModelSpec) -> None:
        """One model's controller, joiners, learner and monitor, each a ServiceHost actor that
        builds the metric group of the component it runs."""
        import ray

        from services.metrics import GROUPS

        p, ms, ml = self.platform, spec.stream, spec.learner
        host = ray.remote(ServiceHost)
        common = {"namespace": NAMESPACE, "max_restarts": -1, "max_task_retries": 0, **self._placement()}

        def start(role: str, factory: Any, cpus: float, **options: Any) -> None:
            source = spec.source(role)
            self.actor_names[source] = spec.actor(role)
            self.actors[source] = host.options(name=spec.actor(role), num_cpus=cpus, **common, **options).remote(
                factory, source, GROUPS[role.split("-")[0]], spec.metric_labels
            )

        # a thread per replica's long-poll (wait_serving) besides admin, status and metrics calls
        replicas = self.serve_settings.max_replicas or self.serve_settings.replicas
        start("controller", _controller(ms, ml, self.serve_settings), p.controller_cpus, max_concurrency=8 + replicas)
        for i in range(p.joiners):
            start("joiner" if i == 0 else f"joiner-{i}", _joiner(ms, (i, p.joiners)), p.joiner_cpus)
        start("learner", _learner(ms, ml), p.learner_cpus, num_gpus=p.learner_gpus, resources=p.learner_resources)
        if self.monitor.drift_enabled:
            start("monitor", _monitor(ms, self.monitor, ml), p.monitor_cpus)

    def _start_serve(self) -> None:
        """Serve with the HTTP app, and a local Prometheus when asked."""
        from ray import serve

        from services.serve_app import build_app

        st = self.serve_settings
        serve.start(http_options={"host": st.host, "port": st.port})
        serve.run(build_app(self.models, st), name=APP_NAME, route_prefix="/")
        self.urls["api"] = f"http://{st.host}:{st.port}"
        if self.with_prometheus:
            from services.prometheus import LocalPrometheus

            self.prometheus = LocalPrometheus(
                self.urls["metrics"],
                self.stream.state_dir / "prometheus",
                self.platform.prometheus_port,
                st.metrics_host,
                self.platform.prometheus_scrape_s,
                token=st.metrics_token,
            ).start()
            self.urls["prometheus"] = self.prometheus.url

    def cpu_reservations(self) -> dict[str, float]:
        """Ray CPUs each part reserves (they must fit in the local Ray's CPUs)."""
        p, st = self.platform, self.serve_settings
        n = len(self.models)
        out = {
            "learners": n * p.learner_cpus,
            "joiners": n * p.joiners * p.joiner_cpus,
            "controllers": n * p.controller_cpus,
            "serve replicas": st.replicas * st.replica_cpus,
        }
        if self.monitor.drift_enabled:
            out["monitors"] = n * p.monitor_cpus
        return out

    def check_cpus(self) -> None:
        wanted = self.cpu_reservations()
        if sum(wanted.values()) > self.platform.ray_num_cpus + 1e-9:
            parts = ", ".join(f"{k} {v:g}" for k, v in wanted.items())
            raise ConfigError(
                f"the platform reserves {sum(wanted.values()):g} CPUs ({parts}) but the local Ray has "
                f"{self.platform.ray_num_cpus} (STREAMCL_RAY_NUM_CPUS): lower a reservation "
                "(STREAMCL_LEARNER_CPUS, STREAMCL_REPLICA_CPUS, ...) or raise the CPUs"
            )

    def status(self) -> dict[str, Any]:
        """Each service actor's status, by source name (``learner``, ``learner-news``, ...)."""
        import ray

        out = {}
        for name, actor in self.actors.items():
            if name == "metrics":
                continue
            try:
                out[name] = ray.get(actor.status.remote(), timeout=10)
            except Exception as exc:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    def stop(self) -> None:
        import ray

        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        self.supervisor = None
        if self.pusher is not None:
            self.pusher.stop()
            self.pusher = None
        if ray.is_initialized():
            if self.serve_enabled:
                try:
                    from ray import serve

                    serve.shutdown()
                except Exception:
                    log.exception("serve shutdown")
            services = {name: a for name, a in self.actors.items() if name != "metrics"}
            stops = {name: a.stop.remote() for name, a in services.items()}  # in parallel
            for name, ref in stops.items():
                try:
                    ray.get(ref, timeout=30)
                except Exception:
                    log.warning("%s did not stop cleanly", name)
            for actor in services.values():
                ray.kill(actor, no_restart=True)
            self.actors.clear()
            self.actor_names.clear()
            ray.shutdown()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.ephemeral_state:
            shutil.rmtree(self.stream.state_dir, ignore_errors=True)


#: Ray Serve's throughput-optimized mode with its HAProxy ingress: HAProxy (C) takes the HTTP
#: port and sends each request straight to a replica's own HTTP server, so no Python proxy sits
#: on the request path (on 2 cores: 0.75 of the bare model's texts/s at one text per request
#: against 0.5 through the proxy; bench/serving.py). Replicas drain for a few seconds on stop.
HAPROXY_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3",
}


def serve_ingress_environment(ingress: str) -> None:
    """Set Ray Serve's ingress variables for a local Ray (before ``ray.init``, whose processes
    inherit them); a variable already set in the environment wins."""
    if ingress == "haproxy":
        for key, value in HAPROXY_ENV.items():
            os.environ.setdefault(key, value)


def _secret(value: SecretStr | None) -> str | None:
    """The text of a secret setting (handed to the actor that checks it), None when unset."""
    return value.get_secret_value() if value is not None else None


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    """Wait until ``url`` answers 200."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout_s}s")
        time.sleep(0.5)
