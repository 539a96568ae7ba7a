"""Typed settings: ``STREAMCL_*`` environment variables, then an optional YAML file.

Every service has one frozen settings model built on :class:`BaseStreamclSettings`. The YAML
file named by ``STREAMCL_CONFIG`` holds flat keys named like the fields (``kafka_bootstrap:
…``); environment variables win over it, explicit arguments over both. Secrets are
``SecretStr`` and print masked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streaming.errors import ConfigError
from streaming.events import DLQ_PAYLOAD_BYTES
from streaming.pii import ENTITIES as PII_ENTITIES
from streaming.pii import checked_entities

CONFIG_ENV = "STREAMCL_CONFIG"


class BaseStreamclSettings(BaseSettings):
    """Common behaviour: prefix ``STREAMCL_``, frozen, unknown keys ignored, YAML file."""

    # an error names the setting, never its value: a secret (a password, a token) stays out of logs
    model_config = SettingsConfigDict(env_prefix="STREAMCL_", frozen=True, extra="ignore", hide_input_in_errors=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get(CONFIG_ENV)
        if config:
            if not Path(config).is_file():
                raise FileNotFoundError(f"{CONFIG_ENV}={config}: no such settings file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        return tuple(sources)

    def describe(self) -> dict[str, Any]:
        """The settings as printable values, secrets masked."""
        return {k: (str(v) if isinstance(v, SecretStr) else v) for k, v in self}


class StreamSettings(BaseStreamclSettings):
    """Kafka connection, topics, event limits and the joiner's window."""

    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: start the embedded broker")
    embedded_broker: str = Field("127.0.0.1:9092", description="host:port of the embedded broker")
    embedded_broker_kind: Literal["kafka", "tansu"] = Field(
        "kafka",
        description="the embedded broker: kafka (Apache Kafka from `make install`, data kept under the state dir) "
        "or tansu (memory only: starts in 0.1 s without Java, loses every topic when it stops)",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism (required with SASL_*)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret, masked)")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for TLS")
    kafka_ssl_certfile: str | None = Field(None, description="client certificate for mutual TLS")
    kafka_ssl_keyfile: str | None = Field(None, description="client key for mutual TLS")
    kafka_ssl_password: SecretStr | None = Field(None, description="client key password (secret)")
    kafka_ssl_check_hostname: bool = Field(True, description="verify the broker's TLS host name")
    topic_prefix: str = Field("streamcl", pattern=r"^[A-Za-z0-9._-]{1,200}$", description="topic names prefix")
    topic_partitions: int = Field(1, ge=1, le=1024, description="partitions of topics streamcl creates")
    topic_replication: int = Field(1, ge=1, le=16, description="replication of topics streamcl creates")
    topic_retention_ms: int | None = Field(
        7 * 24 * 3600 * 1000,
        ge=0,
        description="retention.ms of topics streamcl creates (default 7 days: how long a forgotten text may stay in "
        "Kafka); 0 or null: the broker's default; existing topics keep theirs",
    )
    max_text_chars: int = Field(10_000, ge=1, le=1_000_000, description="longest accepted text")
    max_labels: int = Field(
        1000,
        ge=2,
        le=100_000,
        description="labels per model (each a row of the head, a score in every answer): feedback with a new label "
        "past this many is refused (HTTP 422, DLQ label_limit)",
    )
    max_domains: int = Field(
        100,
        ge=1,
        le=10_000,
        description="distinct domains a model tracks (metric series, windows, held-out slices): later ones fold "
        "into other",
    )
    join_ttl_s: float = Field(600.0, gt=0, description="how long a text or feedback waits for its pair")
    join_max_pending: int = Field(200_000, ge=1, description="most texts+feedback waiting in the joiner")
    join_checkpoint_s: float = Field(2.0, gt=0, description="joiner state checkpoint interval")
    join_producer_process: bool = Field(
        True, description="the joiner produces from a child process (a core of its own)"
    )
    backlog_max: int = Field(
        5000, ge=1, description="labeled examples the learner may be behind before the backlog policy acts"
    )
    backlog_policy: Literal["sample", "throttle"] = Field(
        "sample",
        description="when the learner is more than backlog_max behind: sample (train on a random sample of the "
        "backlog, count the rest as skipped) or throttle (the joiner stops joining until the learner caught up)",
    )
    consumer_group: str = Field("streamcl", description="consumer group prefix")
    state_dir: Path = Field(Path(".state"), description="local state (registry, checkpoints)")
    pii: Literal["off", "mask"] = Field(
        "off",
        description="mask: personal data in every text is replaced by `<ENTITY>` as it enters (API, joiner, DLQ), "
        "before it is logged, stored or learned; off: texts are kept as sent (docs/operations.md#personal-data)",
    )
    pii_entities: Annotated[tuple[str, ...], NoDecode] = Field(
        PII_ENTITIES, description=f"what STREAMCL_PII=mask masks (comma-separated): {', '.join(PII_ENTITIES)}"
    )
    dlq_payload_bytes: int = Field(
        4096, ge=0, le=DLQ_PAYLOAD_BYTES, description="bytes of a bad message kept in its dead letter (0: none)"
    )

    @field_validator("pii_entities", mode="before")
    @classmethod
    def _entities(cls, value: object) -> object:
        names = value.split(",") if isinstance(value, str) else value
        try:
            return checked_entities(names)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check_security(self) -> StreamSettings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")
        if self.kafka_sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            missing = [
                f"STREAMCL_KAFKA_SASL_{n.upper()}"
                for n in ("username", "password")
                if not getattr(self, f"kafka_sasl_{n}")
            ]
            raise ValueError(f"{' and '.join(missing)} must be set for SASL {self.kafka_sasl_mechanism}")
        return self

    @property
    def bootstrap(self) -> str:
        """The servers to connect to: the configured ones or the embedded broker."""
        return self.kafka_bootstrap or self.embedded_broker

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    def group(self, component: str) -> str:
        """The consumer group of ``component`` (``joiner``, ``learner``, ``learner-drift``,
        ``controller``, ``monitor``): the one place that names them, so a component that reads
        another's committed offsets (the joiner's throttle) asks here."""
        return f"{self.consumer_group}.{component}"

    def kafka_config(self) -> dict[str, Any]:
        """Connection and security arguments for every kafka-python client."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
            if self.kafka_sasl_username:
                cfg["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password:
                cfg["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        for name in ("cafile", "certfile", "keyfile"):
            value = getattr(self, f"kafka_ssl_{name}")
            if value:
                cfg[f"ssl_{name}"] = value
        if self.kafka_ssl_password:
            cfg["ssl_password"] = self.kafka_ssl_password.get_secret_value()
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl_check_hostname"] = self.kafka_ssl_check_hostname
        return cfg


@dataclass(frozen=True, slots=True)
class Topics:
    """The names of streamcl's topics under one prefix."""

    texts: str
    feedback: str
    labeled: str
    predictions: str
    models: str
    dlq: str
    drift: str
    audit: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(*(f"{prefix}.{name}" for name in cls.__slots__))  # type: ignore[attr-defined]

    def all(self) -> list[str]:
        return [getattr(self, name) for name in self.__slots__]  # type: ignore[attr-defined]
