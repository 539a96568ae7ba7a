import pytest
from pydantic import ValidationError

from learners.settings import LearnerSettings
from services.settings import ServeSettings
from streaming.settings import StreamSettings, Topics


def test_env_and_yaml(monkeypatch, tmp_path):
    cfg = tmp_path / "streamcl.yaml"
    cfg.write_text("topic_prefix: fromyaml\nmax_text_chars: 99\nbatch_size: 8\n")
    monkeypatch.setenv("STREAMCL_CONFIG", str(cfg))
    monkeypatch.setenv("STREAMCL_MAX_TEXT_CHARS", "123")
    s = StreamSettings()
    assert s.topic_prefix == "fromyaml"
    assert s.max_text_chars == 123  # the environment wins over the file
    assert LearnerSettings().batch_size == 8


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMCL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError):
        StreamSettings()


def test_topics_from_prefix():
    t = Topics.with_prefix("p")
    assert t.texts == "p.texts" and t.dlq == "p.dlq"
    assert len(set(t.all())) == 8 and t.drift == "p.drift" and t.audit == "p.audit"


def test_secrets_are_masked_and_passed_to_kafka():
    s = StreamSettings(
        kafka_bootstrap="a:1,b:2",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="hunter2",
        kafka_ssl_cafile="/ca.pem",
    )
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.describe())
    cfg = s.kafka_config()
    assert cfg["bootstrap_servers"] == ["a:1", "b:2"]
    assert cfg["sasl_plain_password"] == "hunter2"
    assert cfg["ssl_cafile"] == "/ca.pem"
    assert "hunter2" not in repr(ServeSettings(admin_token="hunter2-Xq7Lm2Rk9Vb4Nw1Tz6Pd3Hs8Jc5Gf0"))


def test_invalid_settings_are_refused():
    with pytest.raises(ValidationError):
        StreamSettings(kafka_security_protocol="SASL_SSL")  # no mechanism
    with pytest.raises(ValidationError):
        StreamSettings(topic_partitions=0)
    with pytest.raises(ValidationError):
        LearnerSettings(strategy="magic")
    with pytest.raises(ValidationError):
        StreamSettings(topic_prefix="bad prefix!")


def test_settings_are_frozen():
    s = StreamSettings()
    with pytest.raises(ValidationError):
        s.max_text_chars = 5  # type: ignore[misc]


def test_labels_from_env(monkeypatch):
    monkeypatch.setenv("STREAMCL_LABELS", "neg, pos")
    assert LearnerSettings().labels == ["neg", "pos"]
