"""Settings of the learner (``STREAMCL_*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field, ValidationInfo, create_model, field_validator
from pydantic_settings import NoDecode

from learners.memory import ReplaySettings
from learners.registry import SigningSettings
from learners.strategies import names, settings_models
from streaming.settings import BaseStreamclSettings

if TYPE_CHECKING:

    class _StrategySettings(BaseModel):
        """(For type checkers: a strategy reads its own settings through its own model.)"""

else:
    # Every registered strategy's own settings (learners/strategies/*.py), merged by name.
    _StrategySettings = create_model("StrategySettings", __base__=(*reversed(settings_models()), BaseModel))


class _Model(BaseStreamclSettings):
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
    strategy: str = Field(
        "er-ace", description=f"learning strategy (one file each in learners/strategies/): {', '.join(sorted(names()))}"
    )

    @field_validator("strategy")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in names():
            raise ValueError(f"unknown strategy {value!r}; valid: {', '.join(map(repr, names()))}")
        return value


class _Window(BaseModel):
    window: int = Field(
        128,
        ge=0,
        le=100_000,
        description="Avalanche strategies: examples per experience; each micro-batch trains at once, and every "
        "window the strategy consolidates (importances, anchors, LwF teacher, memories). 0: every micro-batch, "
        "which leaves ewc, si, mas and lwf without effect (their anchor is the step before)",
    )


class LearnerSettings(_StrategySettings, _Window, ReplaySettings, SigningSettings, _Model):
    """What the learner trains, how, and when it writes a version. A strategy's own settings
    (``ewc_lambda``, ``der_alpha``, …) come from its file in ``learners/strategies/``; the
    registry's signing key is read by every process that opens the registry (replicas, gate, learner)."""

    batch_size: int = Field(16, ge=1, le=1024, description="largest micro-batch (it trains on what has arrived)")
    batch_wait_ms: int = Field(
        200,
        ge=0,
        le=60_000,
        description="after the first labeled example arrives, wait at most this long for more before training "
        "(0: train on what one poll returns)",
    )
    max_length: int = Field(64, ge=8, le=512, description="tokens per text")
    frozen_precision: Literal["fp32", "int8"] = Field(
        "int8",
        description="precision the learner runs its frozen encoder layers at (int8: dynamically quantized copies, "
        "1.4x the examples/s on CPU, the features an int8-served copy computes; fp32 with "
        "STREAMCL_SERVE_PRECISION=fp32; the saved weights stay fp32)",
    )
    lr: float = Field(5e-5, gt=0, le=1, description="encoder learning rate")
    head_lr: float = Field(1e-3, gt=0, le=10, description="head learning rate")
    trainable_layers: int = Field(
        2, ge=-1, description="top encoder layers trained (-1: all, 0: head only); with LoRA: the layers adapted"
    )
    adapter: Literal["none", "lora"] = Field(
        "none", description="none: the top layers train; lora: the encoder stays frozen and LoRA adapters learn"
    )
    lora_rank: int = Field(8, ge=1, le=256, description="LoRA: rank of each adapter")
    lora_alpha: float = Field(16.0, gt=0, le=1024, description="LoRA: the update is scaled by alpha / rank")
    lora_targets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["query", "value"],
        description="LoRA: the linear layers adapted in each adapted encoder layer (query, key, value, dense...)",
    )
    lora_lr: float = Field(5e-4, gt=0, le=1, description="LoRA: learning rate of the adapters")
    version_every_n: int = Field(200, ge=1, description="write a version after this many new examples")
    version_every_s: float = Field(
        1.0, gt=0, description="or once it trained (or consumed anything) and this many seconds passed"
    )
    keep_versions: int = Field(10, ge=2, description="versions whose weights are kept (besides serving)")
    dedupe_window: int = Field(
        1_000_000,
        ge=0,
        description="ids of labeled examples remembered as taken, so one read again is not trained twice "
        "(8 bytes each, saved in every version; an id older than the window is trained again; 0: none)",
    )
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
    eval_every_s: float = Field(
        10.0,
        ge=0,
        le=86_400,
        description="score a version on the held-out samples when this many seconds passed since the last "
        "scored one (versions in between carry no held-out figures; 0: every version)",
    )

    @field_validator("labels", "concept_detectors", "drift_act_on", "drift_actions", "lora_targets", mode="before")
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
        from streaming.drift import DRIFT_ACTIONS, KINDS, RIVER_DETECTORS

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
