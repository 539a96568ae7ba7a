"""The security pieces wired through every process (issue 15): the signing key reaches every
registry, any token closes every /v1 route, the metrics token reaches its scrapers, the learner
and joiner bound labels and domains, and every refusal is counted. Each test proves one finding."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from streaming.metrics import sample_value

ROOT = Path(__file__).resolve().parents[2]
KEY = "k3Y-9f4Kq2LzR7wX1mB8nC3vD6tY0pH5sJ"
ADMIN = "adm-9f4Kq2LzR7wX1mB8nC3vD6tY0pH5sJ"
API = "api-3hG7kP1qW9zL5xN2mR8vB4tC6yD0fJ"
METRICS = "met-7Hq2LzR7wX1mB8nC3vD6tY0pH5sJ9f"


def test_signing_key_is_a_learner_setting(tmp_path, monkeypatch):
    """STREAMCL_REGISTRY_SIGNING_KEY was no setting of any service: the learner, the controller and the
    replicas (all open their registry through registry_for with the learner settings) now sign and verify."""
    from learners.registry import LocalRegistry, NewVersion, registry_for
    from learners.settings import LearnerSettings
    from streaming.errors import RegistryError
    from streaming.settings import StreamSettings

    with pytest.raises(ValidationError, match="at least 32"):
        LearnerSettings(registry_signing_key="too-short")
    monkeypatch.setenv("STREAMCL_REGISTRY_SIGNING_KEY", KEY)
    learner = LearnerSettings(registry_uri=str(tmp_path / "reg"))
    assert learner.registry_signing_key is not None and KEY not in repr(learner)
    stream = StreamSettings(state_dir=tmp_path)
    meta = registry_for(stream, learner).create(lambda folder: (folder / "w.bin").write_bytes(b"w"), NewVersion())
    assert meta.signature is not None
    unsigned = LocalRegistry(tmp_path / "plain").create(lambda f: (f / "w.bin").write_bytes(b"w"), NewVersion())
    with pytest.raises(RegistryError, match="not signed"):
        registry_for(stream, learner.model_copy(update={"registry_uri": str(tmp_path / "plain")})).meta(
            unsigned.version
        )


def test_admin_token_alone_closes_every_v1_route(make_app):
    """With only STREAMCL_ADMIN_TOKEN set, predict and feedback stayed open to anyone: any token now closes every
    /v1 route (401 without a token, 403 with a wrong one or a token without the role)."""
    app, replica = make_app(admin_token=ADMIN)
    c = TestClient(app)
    for path, body in (("/v1/predict", {"texts": ["hi"]}), ("/v1/feedback", {"id": "a", "label": "a"})):
        assert c.post(path, json=body).status_code == 401
        assert c.post(path, json=body, headers={"Authorization": "Bearer " + "w" * 40}).status_code == 403
        assert c.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 403
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200  # reads: any role
    assert c.post("/v1/models/nope/predict", json={"texts": ["hi"]}).status_code == 401
    assert not replica.models["default"].calls
    assert c.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["security"]
    open_app, _ = make_app()  # no token at all, on loopback: open as before (the demo, local use)
    assert TestClient(open_app).post("/v1/predict", json={"texts": ["hi"]}).status_code == 200


def test_metrics_token_reaches_local_prometheus(tmp_path):
    """The local Prometheus of `streamcl up --prometheus` scraped without the metrics token: it sends it, from a
    credentials file only its owner can read, never inline in the configuration."""
    from services.prometheus import LocalPrometheus, scrape_config

    assert "authorization" not in scrape_config("http://127.0.0.1:9108/metrics", 5, None)["scrape_configs"][0]
    prom = LocalPrometheus("http://127.0.0.1:9108/metrics", tmp_path, rules=None, token=SecretStr(METRICS))
    config = prom.write_config()
    job = yaml.safe_load(config.read_text())["scrape_configs"][0]
    credentials = Path(job["authorization"]["credentials_file"])
    assert job["authorization"]["type"] == "Bearer" and credentials.read_text() == METRICS
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert METRICS not in config.read_text()


def test_podmonitor_sends_the_metrics_token():
    """The PodMonitor scraped without a token, so STREAMCL_METRICS_TOKEN could not be set in the cluster: it sends
    the streamcl-secrets Secret's STREAMCL_METRICS_TOKEN, and the example Secret lists the key and a tokens file."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/base/podmonitor.yaml").read_text()))
    endpoints = [e for d in docs if d and d["kind"] == "PodMonitor" for e in d["spec"]["podMetricsEndpoints"]]
    assert endpoints and all(
        e["authorization"]["credentials"]
        == {"name": "streamcl-secrets", "key": "STREAMCL_METRICS_TOKEN", "optional": True}
        for e in endpoints
    )
    example = (ROOT / "deploy/k8s/secret.example.yaml").read_text()
    assert "STREAMCL_METRICS_TOKEN" in example and "STREAMCL_TOKENS_FILE" in example


def test_refusals_are_counted(make_app):
    """Refused calls (no token, a wrong token or role, a label over a limit) left no trace in the metrics: they
    are counted in streamcl_http_refused_total by reason, every reason from zero."""
    from services.metrics import REFUSAL_REASONS

    app, replica = make_app(labels=["a", "b"], api_token=API, max_labels=2)
    c = TestClient(app)
    auth = {"Authorization": f"Bearer {API}"}
    c.post("/v1/predict", json={"texts": ["hi"]})
    c.post("/v1/models/nope/predict", json={"texts": ["hi"]}, headers={"Authorization": "Bearer " + "w" * 40})
    c.post("/v1/model/pin", headers=auth)  # no admin token configured
    c.post("/v1/feedback", json={"id": "1", "label": "l" * 200}, headers=auth)
    c.post("/v1/feedback", json={"id": "1", "label": "new"}, headers=auth)
    c.post("/v1/predict", json={"texts": ["hi"], "domains": ["d" * 200]}, headers=auth)
    text = replica.models["default"].metrics.exposition()
    counts = {r: sample_value(text, "streamcl_http_refused_total", {"reason": r}) for r in REFUSAL_REASONS}
    assert counts == {
        "unauthorized": 1,
        "forbidden": 1,
        "admin_disabled": 1,
        "invalid_label": 1,
        "label_limit": 1,
        "invalid_domain": 1,
    }


def test_dockerfile_says_how_to_open_the_listener():
    """The image binds 0.0.0.0 with no word on tokens: beside STREAMCL_HOST it says to set a token or
    STREAMCL_ALLOW_ANONYMOUS=true (the server refuses to start otherwise)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "STREAMCL_HOST=0.0.0.0" in line)
    near = "\n".join(lines[max(0, at - 10) : at + 3])
    assert "STREAMCL_API_TOKEN" in near and "STREAMCL_ALLOW_ANONYMOUS=true" in near


def test_label_limit_is_one_setting_for_api_and_learner():
    """STREAMCL_MAX_LABELS was a setting of the API only: the learner reads the same field (StreamSettings),
    and STREAMCL_MAX_DOMAINS bounds the domains a model tracks."""
    from services.settings import ServeSettings
    from streaming.settings import StreamSettings

    s = StreamSettings(max_labels=5, max_domains=7)
    assert (s.max_labels, s.max_domains) == (5, 7)
    assert (StreamSettings().max_labels, StreamSettings().max_domains) == (1000, 100)
    assert "max_labels" not in ServeSettings.model_fields  # one field, read by both


def test_joiner_live_accuracy_folds_domains():
    """Every domain of a served prediction became a live-accuracy series and a window in the joiner: past
    STREAMCL_MAX_DOMAINS they fold into `other`."""
    from streaming.joiner import capped_live_accuracy

    live = capped_live_accuracy(3)
    for i in range(50):
        live.add(True, f"d{i}")
    assert set(live.per_domain()) == {"d0", "d1", "d2", "other"}


def _publish(settings, rows):
    from streaming.events import LabeledExample
    from streaming.kafka import Producer

    p = Producer(settings)
    for i, (label, domain) in enumerate(rows):
        p.publish(
            settings.topics.labeled, LabeledExample(id=f"e{i}", text=f"text {i} {label}", label=label, domain=domain)
        )
    p.flush()
    p.close()


@pytest.mark.integration
def test_learner_bounds_labels_and_domains(make_settings, tmp_path):
    """The learner grew its head for every new label and kept a window, a metric series and held-out slice per
    domain: a label past STREAMCL_MAX_LABELS is dead-lettered (label_limit) and listed as skipped, the learner
    goes on, and domains past STREAMCL_MAX_DOMAINS fold into `other`."""
    from learners.metrics import LearnerMetrics
    from learners.service import LearnerService
    from learners.settings import LearnerSettings
    from streaming.events import DeadLetter
    from streaming.kafka import Consumer

    s = make_settings(max_labels=2, max_domains=2)
    rows = [("pos", "a"), ("neg", "b"), ("third", "c"), ("pos", "d"), ("fourth", "a"), ("neg", "e")] * 2
    _publish(s, rows)
    ls = LearnerSettings(registry_uri=str(tmp_path / "registry"), batch_size=4, version_every_n=4,
                         version_every_s=3600, eval_holdout_every=0)  # fmt: skip
    metrics = LearnerMetrics(CollectorRegistry())
    svc = LearnerService(s, ls, metrics)
    try:
        deadline = time.monotonic() + 60
        while svc._offsets.get(f"{s.topics.labeled}:0", 0) < len(rows):
            assert time.monotonic() < deadline, svc.status()
            svc.step(0.2)
        svc.write_version()
        assert svc.model.labels == ["pos", "neg"]
        assert svc.trained_total == 8
        assert set(svc.prequential.per_domain()) == {"a", "b", "other"}
        skipped = {
            i for m in svc.registry.versions() for i in (svc.registry.lineage(m.version) or {}).get("skipped", [])
        }
        assert {f"e{i}" for i, (label, _) in enumerate(rows) if label in ("third", "fourth")} <= skipped
    finally:
        svc.close()
    c = Consumer(s, group_id=None)
    c.assign([s.topics.dlq])
    dead: list[DeadLetter] = []
    deadline = time.monotonic() + 20
    while len(dead) < 4 and time.monotonic() < deadline:
        dead += [DeadLetter.model_validate_json(r.value) for r in c.poll(1.0)]
    c.close()
    assert sorted(d.reason for d in dead) == ["label_limit"] * 4
    exposition = metrics.exposition()
    assert sample_value(exposition, "streamcl_dlq_events_total", {"reason": "label_limit"}) == 4
    assert 'domain="d"' not in exposition and 'domain="other"' in exposition


def test_label_limit_splits_a_batch():
    """A batch carrying new labels past STREAMCL_MAX_LABELS was trained whole: the examples whose label is
    new past the limit are set apart, the rest (old labels, new ones within it) trained."""
    from learners.service import over_label_limit
    from streaming.events import LabeledExample

    batch = [LabeledExample(id=str(i), text="t", label=label) for i, label in enumerate("aXbYaZ")]
    refused = over_label_limit(batch, known=["a", "b"], max_labels=3)
    assert [ev.id for ev in refused] == ["3", "5"]  # X takes the last row; Y and Z are refused
    assert over_label_limit(batch, known=[], max_labels=10) == []
