"""The Ray Serve deployment of the HTTP API: one :class:`Api` replica runs a
:class:`~services.serving.Replica` (models, follower, batcher, event log) behind the FastAPI app
:func:`~services.serving.create_app` builds for it. ``from_env`` is the application builder
of Serve config files and KubeRay's ``serveConfigV2``."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ray import serve

from learners.model import set_threads
from learners.settings import LearnerSettings
from services.models import ModelSpec, model_specs
from services.serving import Replica, create_app
from services.settings import ServeSettings
from streaming.settings import StreamSettings


@serve.deployment
@serve.ingress()
class Api:
    """One replica of the endpoint: the default model on ``/v1/…``, every model (the default
    one too) on ``/v1/models/{name}/…``. Its FastAPI app is built once the models are loaded."""

    def __init__(self, models: list[ModelSpec], settings: ServeSettings) -> None:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)
        set_threads(settings.replica_torch_threads)
        try:
            replica = serve.get_replica_context().replica_tag
        except Exception:
            replica = uuid.uuid4().hex[:8]
        self.replica = Replica(models, settings, replica)

    def __serve_build_asgi_app__(self) -> Any:
        """Serve calls this after ``__init__``: the app answers for this replica's models."""
        return create_app(self.replica)


def build_app(models: list[ModelSpec], settings: ServeSettings) -> Any:
    """The Serve application for ``models`` (the default one first), with replicas (or
    autoscaling) and CPU reservation from the settings. A listener off loopback without a token
    is refused here, before any replica starts (:meth:`ServeSettings.check_listener`)."""
    settings.check_listener()
    scaling: dict[str, Any] = {"num_replicas": settings.replicas}
    if settings.max_replicas is not None and settings.max_replicas > settings.replicas:
        scaling = {
            "autoscaling_config": {
                "min_replicas": settings.replicas,
                "max_replicas": settings.max_replicas,
                "target_ongoing_requests": settings.target_ongoing_requests,
            }
        }
    return Api.options(  # type: ignore[attr-defined]
        **scaling,
        max_ongoing_requests=settings.max_ongoing_requests,
        # Ray gives a fractional-CPU actor OMP_NUM_THREADS=1, which slows torch's kernels even
        # after set_num_threads; passive OpenMP threads do not spin between ops, leaving the
        # cores to the proxy and the event loop (measured: bench/serving.py)
        ray_actor_options={
            "num_cpus": settings.replica_cpus,
            "runtime_env": {
                "env_vars": {"OMP_NUM_THREADS": str(settings.replica_torch_threads), "OMP_WAIT_POLICY": "PASSIVE"}
            },
        },
        health_check_period_s=2,
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    ).bind(models, settings)


def from_env(args: dict[str, str] | None = None) -> Any:
    """Application builder for Serve config files and KubeRay's ``serveConfigV2``
    (``import_path: services.serve_app:from_env``; ``deploy/serve/streamcl.yaml`` is both):
    every setting from the ``STREAMCL_*`` environment of the Ray nodes."""
    from services.settings import PlatformSettings

    return build_app(model_specs(StreamSettings(), LearnerSettings(), PlatformSettings().models), ServeSettings())
