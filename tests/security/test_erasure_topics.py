"""Bounded retention of every topic streamcl creates (issue 15, point 4: Kafka cannot delete one
record, so a forgotten text leaves the topics within STREAMCL_TOPIC_RETENTION_MS)."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from streaming.kafka import ensure_topics
from streaming.settings import StreamSettings

pytestmark = pytest.mark.integration


def _retention(settings: StreamSettings, topics: list[str]) -> dict[str, str | None]:
    admin = KafkaAdminClient(**settings.kafka_config())
    try:
        answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        admin.close()
    found = next(iter(answer.values()))  # {resource type: {topic: {key: {value, ...}}}}
    return {t: (found.get(t, {}).get("retention.ms") or {}).get("value") for t in topics}


def test_every_topic_streamcl_creates_has_the_retention_setting(make_settings):
    """Topics were created with the broker's retention, whatever the erasure policy said, and the
    audit topic was not created at all."""
    s = make_settings()  # the fixture created the topics (tests/conftest.py: ensure_topics)
    assert s.topics.audit == f"{s.topic_prefix}.audit" and s.topics.audit in s.topics.all()
    week = str(7 * 24 * 3600 * 1000)
    assert _retention(s, s.topics.all()) == dict.fromkeys(s.topics.all(), week)

    day = s.model_copy(update={"topic_retention_ms": 24 * 3600 * 1000, "topic_prefix": s.topic_prefix + "d"})
    ensure_topics(day, day.topics.all())
    assert set(_retention(day, day.topics.all()).values()) == {str(24 * 3600 * 1000)}


def test_retention_zero_means_the_brokers_default():
    """``0`` or null leaves retention.ms to the broker (no topic config)."""
    assert StreamSettings(topic_retention_ms=0).topic_retention_ms == 0
    assert StreamSettings(topic_retention_ms=None).topic_retention_ms is None
    with pytest.raises(ValueError):
        StreamSettings(topic_retention_ms=-1)
