"""Settings of the learner (``STREAMCL_*``)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode

from streaming.settings import BaseStreamclSettings

Strategy = Literal["naive", "replay", "er-ace", "ewc", "si", "mas", "lwf", "agem", "gem", "der", "replay-lwf"]

#: Strategies a learner can be built with, by name (naive, replay and er-ace are streamcl's own
#: fine-tuning learners; the others run through Avalanche, see learners/avalanche.py).
STRATEGIES: tuple[str, ...] = get_args(Strategy)


class LearnerSettings(BaseStreamclSettings):
    """What the learner trains, how, and when it writes a version."""

    model_name: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="model name")
    model_path: str | None = Field(None, description="transformers folder or hub name; unset: packaged MiniLM")
    labels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="labels known from the start (comma-separated); more are learned"
    )
    registry_uri: str | None = Field(
        None,
        description="model registry: a path, file:// or s3://bucket/prefix (AWS_* credentials, AWS_ENDPOINT_URL "
        "for S3-compatible stores); unset: <state_dir>/registry",
    )
    strategy: Strategy = Field("er-ace", description=f"learning strategy: {', '.join(STRATEGIES)}")
    replay_buffer: int = Field(
        2000, ge=1, le=100_000, description="replay, er-ace, replay-lwf, der: most examples kept in the replay buffer"
    )
    replay_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="replay, er-ace, replay-lwf, der: the replay buffer holds at most this share of the examples "
        "streamed so far",
    )
    replay_ratio: float = Field(
        0.25, gt=0, le=8, description="replay, er-ace, replay-lwf, der: replayed examples per new example in a step"
    )
    replay_logit_alpha: float = Field(
        1.0,
        ge=0,
        le=100,
        description="replay, er-ace: weight of matching replayed examples' logits to the ones stored with them "
        "(dark experience replay); 0: labels only",
    )
    replay_policy: Literal["reservoir", "class_balanced", "domain_class_balanced"] = Field(
        "domain_class_balanced",
        description="what the replay buffer and the A-GEM/GEM memories keep: reservoir (a uniform sample of "
        "the stream), class_balanced (an equal share per label) or domain_class_balanced (an equal share per "
        "label within each domain)",
    )
    window: int = Field(
        128,
        ge=0,
        le=100_000,
        description="Avalanche strategies: examples per experience; each micro-batch trains at once, and every "
        "window the strategy consolidates (importances, anchors, LwF teacher, memories). 0: every micro-batch, "
        "which leaves ewc, si, mas and lwf without effect (their anchor is the step before)",
    )
    ewc_lambda: float = Field(100.0, ge=0, le=1e9, description="ewc: weight of the penalty (online EWC)")
    ewc_decay: float = Field(0.9, ge=0, le=1, description="ewc: decay of the accumulated importances per experience")
    si_lambda: float = Field(100.0, ge=0, le=1e9, description="si: weight of the synaptic-intelligence penalty")
    mas_lambda: float = Field(1.0, ge=0, le=1e9, description="mas: weight of the memory-aware-synapses penalty")
    mas_alpha: float = Field(0.5, ge=0, le=1, description="mas: share of the old importances kept per experience")
    lwf_alpha: float = Field(1.0, ge=0, le=100, description="lwf, replay-lwf: weight of the distillation loss")
    lwf_temperature: float = Field(2.0, gt=0, le=100, description="lwf, replay-lwf: distillation temperature")
    agem_memory: int = Field(256, ge=1, le=100_000, description="agem: examples in the reference memory")
    agem_sample: int = Field(16, ge=1, le=4096, description="agem: memory examples per reference gradient")
    gem_memory: int = Field(32, ge=1, le=10_000, description="gem: examples in the reference memory")
    gem_groups: int = Field(4, ge=1, le=64, description="gem: gradient constraints (memory groups) per step")
    gem_strength: float = Field(0.5, ge=0, le=10, description="gem: margin of the gradient projection (gamma)")
    der_alpha: float = Field(0.1, ge=0, le=100, description="der: weight of the logit-matching loss on replay")
    der_beta: float = Field(0.5, ge=0, le=100, description="der: weight of the label loss on replay (DER++)")
    batch_size: int = Field(16, ge=1, le=1024, description="micro-batch size")
    max_length: int = Field(64, ge=8, le=512, description="tokens per text")
    lr: float = Field(5e-5, gt=0, le=1, description="encoder learning rate")
    head_lr: float = Field(1e-3, gt=0, le=10, description="head learning rate")
    trainable_layers: int = Field(2, ge=-1, description="top encoder layers trained (-1: all, 0: head only)")
    version_every_n: int = Field(200, ge=1, description="write a version after this many new examples")
    version_every_s: float = Field(60.0, gt=0, description="or after this many seconds, if it trained")
    keep_versions: int = Field(10, ge=2, description="versions whose weights are kept (besides serving)")
    torch_threads: int = Field(1, ge=1, le=256, description="torch threads of the learner process")
    prequential_window: int = Field(500, ge=10, description="examples in the prequential accuracy window")
    seed: int = Field(0, description="random seed of the learner")
    concept_detectors: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["kswin", "ddm"],
        description="concept-drift detectors on the prequential errors (River): adwin, page_hinkley, kswin, ddm",
    )
    drift_act_on: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["concept"], description="drift kinds the learner acts on: concept, input, prediction"
    )
    drift_actions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["snapshot", "boost", "reset"],
        description="on drift: snapshot (write a version first), boost (raise the learning rate), "
        "reset (fresh detectors after adapting)",
    )
    drift_boost_factor: float = Field(3.0, ge=1, le=100, description="learning-rate multiplier while adapting")
    drift_boost_examples: int = Field(300, ge=1, description="examples trained with the boosted learning rate")
    drift_cooldown_examples: int = Field(200, ge=0, description="examples after an action before acting again")
    eval_holdout_every: int = Field(
        10, ge=0, description="hold out every k-th example of a domain for evaluation (0: none)"
    )
    eval_per_domain: int = Field(32, ge=1, description="held-out examples kept per domain")
    eval_recent: int = Field(
        128, ge=0, description="held-out recent examples kept for the promotion gate (after the per-domain samples)"
    )

    @model_validator(mode="after")
    def _memories_fit(self) -> LearnerSettings:
        if self.agem_sample > self.agem_memory:
            raise ValueError(f"agem_sample ({self.agem_sample}) must not exceed agem_memory ({self.agem_memory})")
        if self.gem_groups > self.gem_memory:
            raise ValueError(f"gem_groups ({self.gem_groups}) must not exceed gem_memory ({self.gem_memory})")
        return self

    @field_validator("labels", "concept_detectors", "drift_act_on", "drift_actions", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("concept_detectors", "drift_act_on", "drift_actions")
    @classmethod
    def _known_names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        from streaming.drift import KINDS, RIVER_DETECTORS
        from streaming.metrics import DRIFT_ACTIONS

        valid = {"concept_detectors": RIVER_DETECTORS, "drift_act_on": KINDS, "drift_actions": DRIFT_ACTIONS}
        what = {
            "concept_detectors": "concept detectors",
            "drift_act_on": "drift kinds",
            "drift_actions": "drift actions",
        }
        names = valid[str(info.field_name)]
        unknown = [v for v in value if v not in names]
        if unknown:
            raise ValueError(f"unknown {what[str(info.field_name)]} {unknown}; valid: {', '.join(names)}")
        return value
