"""Shadow mode on a real broker: the shadow reads live texts, the serving version's logged
predictions and feedback from the topics (from the live end) and scores its candidate."""

import time

import pytest

from learners.model import Prediction
from services.shadow import Shadow
from streaming.events import FeedbackEvent, PredictionEvent, TextEvent
from streaming.kafka import Producer

pytestmark = pytest.mark.integration


class Echo:
    """A "candidate" that answers the text's last word."""

    def predict(self, texts):
        return [Prediction(t.split()[-1], {}) for t in texts]


def publish(s, producer, ids, label):
    for i in ids:
        producer.publish(s.topics.texts, TextEvent(id=f"id{i}", text=f"text {label}"))
        producer.publish(s.topics.predictions, PredictionEvent(id=f"id{i}", label="a", scores={}, model_version=1))
        producer.publish(s.topics.feedback, FeedbackEvent(id=f"id{i}", label="a"))
    producer.flush()


def test_the_shadow_scores_live_traffic_from_the_topics(make_settings):
    s = make_settings(topic_partitions=2)
    producer = Producer(s)
    publish(s, producer, range(20), "b")  # before the shadow: not its traffic
    shadow = Shadow(s, lambda v: Echo(), texts=40, share=1.0)
    try:
        shadow.poll(0.5)  # joins the topics at their end
        shadow.start(2)
        publish(s, producer, range(20, 40), "a")
        publish(s, producer, range(40, 60), "b")
        deadline = time.monotonic() + 30
        while not shadow.done() and time.monotonic() < deadline:
            shadow.poll(0.5)
        for _ in range(4):  # the last predictions and feedback after the last text
            shadow.poll(0.3)
        f = shadow.figures()
        assert f["shadow_texts"] == 40 and shadow.done()
        assert f["shadow_compared"] == 40 and f["shadow_agreement"] == 0.5
        assert f["shadow_labeled"] == 40 and f["shadow_accuracy"] == 0.5 and f["shadow_serving_accuracy"] == 1.0
    finally:
        shadow.close()
        producer.close()
