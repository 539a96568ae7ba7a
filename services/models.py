"""Several named models in one deployment.

The default model is the one the top-level settings describe (``STREAMCL_MODEL_NAME``,
topics under ``STREAMCL_TOPIC_PREFIX``); it answers on ``/v1/…``. ``STREAMCL_MODELS`` adds
more, each with its own topics, label set, strategy, registry and state, learned by its own
joiner, learner and controller, served under ``/v1/models/{name}/…``::

    STREAMCL_MODELS='{"news": {"labels": "world,sports,business,tech", "strategy": "naive"},
                      "tickets": {"topic_prefix": "support.tickets"}}'

A named model takes every learner setting (``labels``, ``strategy``, ``model_path``,
``registry_uri``, ``lr``, ...) from its entry, else from the environment like the default
model, and these stream settings: ``topic_prefix`` (default ``<STREAMCL_TOPIC_PREFIX>.<name>``),
``consumer_group``, ``max_text_chars``, ``join_ttl_s``, ``join_max_pending``. Its state lives
in ``<state_dir>/models/<name>`` and, unless its entry names one, its registry under the
default registry URI's ``models/<name>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from learners.settings import LearnerSettings
from streaming.errors import ConfigError
from streaming.settings import StreamSettings

#: Stream settings a named model may set for itself.
STREAM_KEYS = ("topic_prefix", "consumer_group", "max_text_chars", "join_ttl_s", "join_max_pending")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the deployment: its stream (topics, state) and learner settings."""

    name: str
    stream: StreamSettings
    learner: LearnerSettings
    default: bool = True

    def source(self, role: str) -> str:
        """The name of this model's ``role`` process (``learner``, ``learner-news``)."""
        return role if self.default else f"{role}-{self.name}"

    def actor(self, role: str) -> str:
        """The Ray actor name of this model's ``role`` (the default model's are unsuffixed)."""
        return f"streamcl-{self.source(role)}"

    @property
    def metric_labels(self) -> dict[str, str]:
        return {"model": self.name}


def model_specs(
    stream: StreamSettings, learner: LearnerSettings, models: dict[str, dict[str, Any]] | None
) -> list[ModelSpec]:
    """The default model, then every named model of ``models`` (``STREAMCL_MODELS``)."""
    specs = [ModelSpec(learner.model_name, stream, learner)]
    learner_keys = set(LearnerSettings.model_fields) - {"model_name"}
    prefixes = {stream.topic_prefix: learner.model_name}
    for name, entry in (models or {}).items():
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(f"STREAMCL_MODELS: model name {name!r} must match {NAME.pattern}")
        if name == learner.model_name:
            raise ConfigError(
                f"STREAMCL_MODELS: {name!r} is the default model's name (STREAMCL_MODEL_NAME); pick another"
            )
        if not isinstance(entry, dict):
            raise ConfigError(f"STREAMCL_MODELS: model {name!r} needs an object of settings, got {entry!r}")
        unknown = sorted(set(entry) - learner_keys - set(STREAM_KEYS))
        if unknown:
            raise ConfigError(
                f"STREAMCL_MODELS: model {name!r} has unknown settings {unknown}; valid: "
                f"{', '.join(sorted(learner_keys | set(STREAM_KEYS)))}"
            )
        own = {k: v for k, v in entry.items() if k in learner_keys}
        if "registry_uri" not in own and learner.registry_uri:
            own["registry_uri"] = f"{learner.registry_uri.rstrip('/')}/models/{name}"
        stream_update = {
            "topic_prefix": f"{stream.topic_prefix}.{name}",
            "consumer_group": f"{stream.consumer_group}.{name}",
            **{k: v for k, v in entry.items() if k in STREAM_KEYS},
            "state_dir": stream.state_dir / "models" / name,
        }
        try:
            model_learner = LearnerSettings(**own, model_name=name)
            model_stream = StreamSettings(**{**stream.model_dump(), **stream_update})
        except ValidationError as exc:
            raise ConfigError(f"STREAMCL_MODELS: model {name!r}: {exc}") from None
        prefix = model_stream.topic_prefix
        if prefix in prefixes:
            raise ConfigError(
                f"STREAMCL_MODELS: model {name!r} would share topics {prefix}.* with model {prefixes[prefix]!r}"
            )
        prefixes[prefix] = name
        specs.append(ModelSpec(name, model_stream, model_learner, default=False))
    return specs
