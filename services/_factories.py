"""The factories of the platform's services: each builds its component inside the Ray actor
(a :class:`streaming.runtime.ServiceHost`) that hosts it, with that actor's metric group."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from learners.settings import LearnerSettings
from services.settings import MonitorSettings, ServeSettings
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)


def _joiner(stream: StreamSettings, shard: tuple[int, int]) -> Any:
    def make(metrics: Any) -> Any:
        from streaming.joiner import JoinerService

        return JoinerService(stream, metrics, shard=shard)

    return make


def _learner(stream: StreamSettings, learner: LearnerSettings) -> Any:
    def make(metrics: Any) -> Any:
        from learners.service import LearnerService

        return LearnerService(stream, learner, metrics)

    return make


def _controller(stream: StreamSettings, learner: LearnerSettings, serve: ServeSettings) -> Any:
    def make(metrics: Any) -> Any:
        from learners.quantize import served_copy
        from learners.registry import registry_for
        from services.controller import ModelController
        from services.gate import PromoteNewer, ScoreGate

        registry = registry_for(stream, learner)
        if serve.serve_precision == "fp32" and learner.frozen_precision == "int8":
            log.warning(
                "replicas serve fp32 while the learner runs its frozen layers int8 (STREAMCL_FROZEN_PRECISION): "
                "its class statistics describe int8 features; set STREAMCL_FROZEN_PRECISION=fp32 too "
                "(docs/strategies.md, frozen layers in int8)"
            )
        gate: Any = PromoteNewer()
        if serve.gate == "score":
            from learners.model import set_threads

            set_threads(serve.gate_torch_threads)
            gate = ScoreGate(
                registry,
                serve.gate_max_drop,
                serve.gate_max_domain_drop,
                serve.gate_min_domain_examples,
                serve.gate_z,
                served=partial(served_copy, precision=serve.serve_precision),  # judge what replicas serve
            )
        shadow = None
        if serve.shadow_texts > 0:
            from services.shadow import Shadow

            shadow = Shadow(
                stream,
                lambda version: served_copy(registry.load_model(version), serve.serve_precision),
                metrics,
                texts=serve.shadow_texts,
                share=serve.shadow_share,
                max_s=serve.shadow_max_s,
            )
        return ModelController(stream, registry, metrics, learner.model_name, gate, shadow)

    return make


def _monitor(stream: StreamSettings, settings: MonitorSettings, learner: LearnerSettings) -> Any:
    def make(metrics: Any) -> Any:
        from services.monitor import DriftMonitor

        return DriftMonitor(stream, settings, learner, metrics)

    return make
