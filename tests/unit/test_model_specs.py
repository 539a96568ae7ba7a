"""Named models: each one's topics, consumer group, state and registry, and bad entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from learners.settings import LearnerSettings
from services.models import model_specs
from services.settings import PlatformSettings
from streaming.errors import ConfigError
from streaming.settings import StreamSettings


def specs(models, **learner):
    stream = StreamSettings(state_dir=Path("/state"), topic_prefix="app")
    return model_specs(stream, LearnerSettings(**learner), models)


def test_the_default_model_comes_first_and_keeps_its_names():
    (default,) = specs({})
    assert default.default and default.name == "default" and default.stream.topic_prefix == "app"
    assert default.actor("controller") == "streamcl-controller" and default.source("learner") == "learner"


def test_named_models_get_their_own_topics_group_state_and_settings():
    default, news, tickets = specs(
        {"news": {"labels": "world,sports", "strategy": "naive"}, "tickets": {"topic_prefix": "support.tickets"}}
    )
    assert news.stream.topics.texts == "app.news.texts" and tickets.stream.topics.feedback == "support.tickets.feedback"
    assert news.stream.consumer_group == "streamcl.news" and news.stream.state_dir == Path("/state/models/news")
    assert news.learner.labels == ["world", "sports"] and news.learner.strategy == "naive"
    assert tickets.learner.strategy == default.learner.strategy == "er-ace"
    assert news.learner.model_name == "news" and news.actor("joiner-1") == "streamcl-joiner-1-news"
    assert news.metric_labels == {"model": "news"}


def test_a_shared_registry_uri_gets_a_folder_per_model():
    _, news = specs({"news": {}}, registry_uri="s3://bucket/streamcl/")
    assert news.learner.registry_uri == "s3://bucket/streamcl/models/news"
    _, own = specs({"news": {"registry_uri": "/elsewhere"}}, registry_uri="s3://bucket/streamcl")
    assert own.learner.registry_uri == "/elsewhere"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"News!": {}}, "must match"),
        ({"default": {}}, "default model's name"),
        ({"news": ["labels"]}, "object of settings"),
        ({"news": {"colour": "red"}}, "unknown settings ['colour']"),
        ({"news": {"strategy": "magic"}}, "model 'news'"),
        ({"news": {"topic_prefix": "app"}}, "share topics app.*"),
        ({"a": {"topic_prefix": "x"}, "b": {"topic_prefix": "x"}}, "share topics x.*"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(models, message):
    with pytest.raises(ConfigError, match=None) as err:
        specs(models)
    assert message in str(err.value)


def test_models_come_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("STREAMCL_MODELS", '{"news": {"labels": ["a", "b"]}}')
    assert PlatformSettings().models == {"news": {"labels": ["a", "b"]}}


def test_the_platform_reserves_cpus_per_model_and_joiner_and_refuses_too_many(tmp_path):
    from services.platform import Platform

    platform = Platform.from_env(
        state_dir=tmp_path,
        platform={"models": {"news": {}}, "joiners": 2},
        monitor={"drift_enabled": False},
    )
    assert [m.name for m in platform.models] == ["default", "news"]
    assert platform.cpu_reservations() == {
        "learners": 2.0,
        "joiners": 1.0,
        "controllers": 0.2,
        "serve replicas": 0.5,
    }
    with pytest.raises(ConfigError, match=r"reserves 3.7 CPUs \(learners 2, joiners 1, .*STREAMCL_LEARNER_CPUS"):
        platform.check_cpus()
