"""Settings of the HTTP endpoint and of the platform on one machine (``STREAMCL_*``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from services._auth import Authenticator, check_token, load_tokens_file
from streaming.errors import ConfigError
from streaming.events import MAX_LABEL_CHARS
from streaming.settings import BaseStreamclSettings


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens on this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServeSettings(BaseStreamclSettings):
    """The Ray Serve endpoint."""

    host: str = Field("127.0.0.1", description="HTTP listen address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    metrics_host: str = Field("127.0.0.1", description="metrics listen address")
    metrics_port: int = Field(9108, ge=1, le=65535, description="port of the one metrics URL")
    api_token: SecretStr | None = Field(
        None, description="roles predict and feedback; any token set (this, admin, a tokens file) closes every /v1 call"
    )
    admin_token: SecretStr | None = Field(None, description="role admin: admin calls need it; unset: refused")
    tokens_file: Path | None = Field(
        None,
        description='more tokens, JSON {"name": {"token": "...", "roles": ["predict", "feedback", "admin"]}} '
        "(a mounted Secret), read again when it changes",
    )
    metrics_token: SecretStr | None = Field(None, description="when set, the metrics URL needs it (Bearer)")
    allow_anonymous: bool = Field(
        False, description="let a listener that is not on loopback (STREAMCL_HOST) answer /v1 calls without a token"
    )
    max_label_chars: int = Field(
        MAX_LABEL_CHARS, ge=1, le=MAX_LABEL_CHARS, description="longest label feedback may carry"
    )
    max_texts_per_request: int = Field(256, ge=1, le=100_000, description="texts per predict request")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body")
    serve_ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="haproxy: HAProxy sends requests straight to the replicas (Ray Serve's throughput-optimized "
        "mode); proxy: through Ray Serve's Python proxy. On a Ray cluster, its environment decides (docs)",
    )
    replicas: int = Field(1, ge=1, le=64, description="Serve replicas")
    max_replicas: int | None = Field(
        None, ge=1, le=1024, description="autoscale between STREAMCL_REPLICAS and this many replicas; unset: fixed"
    )
    target_ongoing_requests: float = Field(
        16.0, gt=0, description="autoscaling: ongoing requests per replica it aims for"
    )
    replica_cpus: float = Field(0.5, gt=0, le=64, description="CPUs reserved per replica")
    replica_torch_threads: int = Field(1, ge=1, le=256, description="torch threads per replica")
    max_ongoing_requests: int = Field(
        64, ge=1, le=10_000, description="requests a replica takes at once (they are batched together)"
    )
    max_batch_texts: int = Field(
        32, ge=1, le=4096, description="texts per forward pass when batching requests (longer batches pad more)"
    )
    replica_warm_versions: int = Field(
        3, ge=0, le=64, description="versions each replica keeps loaded besides the serving one (fast swaps)"
    )
    predict_max_wait_s: float = Field(
        8.0,
        gt=0,
        le=9,
        description="a prediction that waited this long for the model is answered 503 overloaded (retry) "
        "instead of being computed, so every request is answered within 10 s",
    )
    model_poll_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="how often replicas read the serving version while the model controller cannot tell them "
        "(they long-poll it and swap as soon as a version is promoted)",
    )
    serve_precision: Literal["fp32", "int8"] = Field(
        "int8",
        description="int8: serve a copy whose encoder's linear layers are dynamically quantized (2.3-2.7x the "
        "texts/s on CPU: docs/serving.md; accuracy against fp32: docs/strategies.md), the copy the gate judges; "
        "fp32: serve each version as trained",
    )
    log_predictions: bool = Field(True, description="log TextEvent + PredictionEvent per text to Kafka")
    feedback_ack_timeout_s: float = Field(
        5.0,
        gt=0,
        le=9,
        description="POST /v1/feedback answers 202 once Kafka acknowledged its events, else 503 after this long",
    )
    event_drain_s: float = Field(
        5.0, ge=0, le=60, description="a stopping replica sends its queued prediction logs for at most this long"
    )
    gate: Literal["score", "newer"] = Field(
        "score", description="promotion gate: score candidates against the serving version, or promote every newer one"
    )
    gate_max_drop: float = Field(
        0.02, ge=0, le=1, description="gate: largest drop in accuracy on the whole gate set that still promotes"
    )
    gate_max_domain_drop: float = Field(
        0.1, ge=0, le=1, description="gate: largest drop in accuracy on any one domain that still promotes"
    )
    gate_min_domain_examples: int = Field(
        20, ge=1, description="gate: a domain is judged alone once it has this many gate examples"
    )
    gate_z: float = Field(
        1.64, ge=0, description="gate: a drop must also be beyond chance (paired sign test, this many deviations)"
    )
    shadow_texts: int = Field(
        0,
        ge=0,
        description="shadow mode: before the gate decides a candidate, it predicts this many sampled live texts; "
        "its agreement with the serving version and its accuracy on those with feedback are exported (0: off)",
    )
    shadow_share: float = Field(0.1, gt=0, le=1, description="shadow mode: share of live texts sampled")
    shadow_max_s: float = Field(
        300.0, gt=0, description="shadow mode: the gate decides after this long even with fewer texts"
    )
    gate_torch_threads: int = Field(1, ge=1, le=256, description="torch threads of the controller scoring candidates")

    @field_validator("api_token", "admin_token", "metrics_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            check_token(f"STREAMCL_{str(info.field_name).upper()}", value.get_secret_value())
        return value

    @field_validator("tokens_file")
    @classmethod
    def _readable_tokens(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_tokens_file(value)  # every token checked at start-up
        return value

    def check_listener(self) -> None:
        """Refuse (:class:`~streaming.errors.ConfigError`) to serve /v1 without a token on an
        address other than loopback, unless STREAMCL_ALLOW_ANONYMOUS says so."""
        guarded = Authenticator.from_settings(self).guards("predict")
        if not guarded and not self.allow_anonymous and not is_loopback(self.host):
            raise ConfigError(
                f"STREAMCL_HOST={self.host} is not loopback and no token (STREAMCL_API_TOKEN, STREAMCL_ADMIN_TOKEN, "
                "STREAMCL_TOKENS_FILE) is set: "
                "set a token, or STREAMCL_ALLOW_ANONYMOUS=true to serve predictions and feedback to anyone"
            )


class MonitorSettings(BaseStreamclSettings):
    """The drift monitor (input and prediction drift, label-free accuracy estimate)."""

    drift_enabled: bool = Field(True, description="run the drift monitor")
    drift_input_reference: int = Field(300, ge=2, description="input drift: texts in the reference window")
    drift_input_window: int = Field(150, ge=2, description="input drift: texts in the recent window")
    drift_input_step: int = Field(25, ge=1, description="input drift: test every this many texts")
    drift_input_alpha: float = Field(1e-4, gt=0, lt=1, description="input drift: corrected p-value that fires")
    drift_prediction_reference: int = Field(300, ge=2, description="prediction drift: reference predictions")
    drift_prediction_window: int = Field(300, ge=2, description="prediction drift: recent predictions")
    drift_prediction_step: int = Field(50, ge=1, description="prediction drift: test every this many")
    drift_prediction_threshold: float = Field(0.25, gt=0, description="prediction drift: PSI that fires")
    drift_max_texts_per_s: float = Field(
        8.0, gt=0, description="texts embedded per second at most; the rest are sampled out"
    )
    drift_encoder_layers: int = Field(
        2, ge=0, description="input drift embeds with the base encoder's first N layers (0: all)"
    )
    drift_max_length: int = Field(48, ge=8, le=512, description="input drift: tokens per text embedded")
    drift_torch_threads: int = Field(1, ge=1, le=256, description="torch threads of the monitor")
    estimate_window: int = Field(500, ge=1, description="predictions in the label-free accuracy estimate")


class PlatformSettings(BaseStreamclSettings):
    """How ``streamcl up`` lays the platform out on one machine."""

    ray_address: str | None = Field(None, description="Ray cluster to join; unset: start a local one")
    ray_num_cpus: int = Field(2, ge=1, le=1024, description="CPUs of the local Ray")
    learner_cpus: float = Field(1.0, gt=0, description="CPUs reserved for the learner actor")
    learner_gpus: float = Field(0.0, ge=0, description="GPUs reserved for the learner actor (a GPU node on a cluster)")
    learner_resources: dict[str, float] = Field(
        default_factory=dict,
        description='custom Ray resources the learner actor needs, JSON {"name": amount}: places it on the nodes '
        "that offer them (a node group of a cluster)",
    )
    joiner_cpus: float = Field(0.25, gt=0, description="CPUs reserved for the joiner actor")
    controller_cpus: float = Field(0.1, gt=0, description="CPUs reserved for the model controller")
    monitor_cpus: float = Field(0.15, gt=0, description="CPUs reserved for the drift monitor")
    joiners: int = Field(
        1, ge=1, le=256, description="joiners per model, each reading its share of the partitions (at most as many)"
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='named models besides the default, JSON: {"name": {"labels": "a,b", "strategy": "naive", ...}}',
    )
    prometheus_port: int = Field(9095, ge=1, le=65535, description="port of `streamcl up --prometheus`")
    prometheus_scrape_s: float = Field(5.0, gt=0, le=300, description="scrape interval of `streamcl up --prometheus`")
