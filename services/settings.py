"""Settings of the HTTP endpoint and of the platform on one machine (``STREAMCL_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from streaming.settings import BaseStreamclSettings


class ServeSettings(BaseStreamclSettings):
    """The Ray Serve endpoint."""

    host: str = Field("127.0.0.1", description="HTTP listen address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    metrics_host: str = Field("127.0.0.1", description="metrics listen address")
    metrics_port: int = Field(9108, ge=1, le=65535, description="port of the one metrics URL")
    api_token: SecretStr | None = Field(None, description="when set, every /v1 call needs it (Bearer)")
    admin_token: SecretStr | None = Field(None, description="admin calls need it; unset: refused")
    max_texts_per_request: int = Field(256, ge=1, le=100_000, description="texts per predict request")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body")
    replicas: int = Field(1, ge=1, le=64, description="Serve replicas")
    replica_cpus: float = Field(0.5, gt=0, le=64, description="CPUs reserved per replica")
    torch_threads: int = Field(1, ge=1, le=256, description="torch threads per replica")
    model_poll_s: float = Field(0.5, gt=0, le=60, description="how often replicas check the serving version")
    log_predictions: bool = Field(True, description="log TextEvent + PredictionEvent per text to Kafka")


class PlatformSettings(BaseStreamclSettings):
    """How ``streamcl up`` lays the platform out on one machine."""

    ray_address: str | None = Field(None, description="Ray cluster to join; unset: start a local one")
    ray_num_cpus: int = Field(2, ge=1, le=1024, description="CPUs of the local Ray")
    learner_cpus: float = Field(1.0, gt=0, description="CPUs reserved for the learner actor")
    joiner_cpus: float = Field(0.25, gt=0, description="CPUs reserved for the joiner actor")
    controller_cpus: float = Field(0.1, gt=0, description="CPUs reserved for the model controller")
