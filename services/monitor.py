"""The drift monitor: watches every text the platform sees and every served prediction.

It reads ``texts`` (texts served by ``/v1/predict`` are logged there, streamed ones are
published there) and ``predictions``, embeds texts with the *base* encoder (frozen, so
a new model version does not look like input drift), and runs the input-drift detector on
the embeddings, the prediction-drift detector on the predicted labels, and the label-free
accuracy estimate on the served probabilities. Each detection is counted, logged and
published as a :class:`~streaming.events.DriftEvent` on ``drift`` for the learner.

Embedding costs CPU on the cores serving also uses, so it has a budget
(``drift_max_texts_per_s``): texts beyond it are sampled out uniformly and counted.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Any

import numpy as np

from learners.model import TextClassifier, set_threads, truncate_layers
from learners.settings import LearnerSettings
from services.metrics import MonitorMetrics
from services.settings import MonitorSettings
from streaming.drift import Detection, Detector, EmbeddingKS, LabelPSI
from streaming.errors import InvalidEvent
from streaming.events import PredictionEvent, TextEvent, decode
from streaming.kafka import Consumer, Producer, offset_key
from streaming.runtime import report_detection
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self._last = time.monotonic()

    def take(self, wanted: int) -> int:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted


class Embedder:
    """Mean-pooled embeddings of the base encoder's first ``layers`` layers (0: all); a text
    it cannot encode is left out."""

    def __init__(self, model_path: str | None, max_length: int, layers: int = 0, batch_size: int = 32) -> None:
        self.model = TextClassifier.from_encoder(model_path, [], max_length).eval()
        if layers > 0:
            truncate_layers(self.model.encoder, layers)
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(embeddings of the texts that could be encoded, how many could not)."""
        out: list[np.ndarray] = []
        failed = 0
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            try:
                out.append(self._embed(chunk))
            except Exception:  # one bad text must not lose the others: retry one by one
                for text in chunk:
                    try:
                        out.append(self._embed([text]))
                    except Exception:
                        failed += 1
        dim = int(self.model.head.in_features)
        return (np.concatenate(out) if out else np.zeros((0, dim))), failed

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.embed(**self.model.tokenize(texts)).float().numpy()


class DriftMonitor:
    """A service (see :mod:`streaming.runtime`): input and prediction drift, confidence."""

    name = "monitor"

    def __init__(
        self, stream: StreamSettings, settings: MonitorSettings, learner: LearnerSettings, metrics: MonitorMetrics
    ) -> None:
        set_threads(settings.drift_torch_threads)
        self.stream, self.settings, self.metrics = stream, settings, metrics
        self.topics = stream.topics
        self.model_name = learner.model_name
        self.embedder = Embedder(learner.model_path, settings.drift_max_length, settings.drift_encoder_layers)
        self.input = EmbeddingKS(
            settings.drift_input_reference,
            settings.drift_input_window,
            settings.drift_input_step,
            settings.drift_input_alpha,
        )
        self.prediction = LabelPSI(
            settings.drift_prediction_reference,
            settings.drift_prediction_window,
            settings.drift_prediction_step,
            settings.drift_prediction_threshold,
        )
        self.detectors: list[Detector] = [self.input, self.prediction]
        metrics.track_detectors(self.detectors)
        self.confidence: deque[float] = deque(maxlen=settings.estimate_window)
        self._confidence_sum = 0.0  # of ``confidence``, kept as it slides
        self.budget = TokenBucket(settings.drift_max_texts_per_s, max(32.0, settings.drift_max_texts_per_s * 2))
        self._rng = random.Random(0)
        self._producer = Producer(stream, client_id="streamcl-monitor", metrics=metrics)
        self._consumer = Consumer(stream, group_id=stream.group("monitor"), client_id="streamcl-monitor")
        self._offsets = self._consumer.assign([self.topics.texts, self.topics.predictions])
        self._last_commit = time.monotonic()
        self.detections: deque[Detection] = deque(maxlen=100)

    def step(self, timeout_s: float = 0.5) -> int:
        records = self._consumer.poll(timeout_s, max_records=500)
        texts: list[str] = []
        for rec in records:
            self._offsets[offset_key(rec.topic, rec.partition)] = rec.offset + 1
            kind = TextEvent if rec.topic == self.topics.texts else PredictionEvent
            try:
                event = decode(kind, rec.value, self.stream.max_text_chars)
            except InvalidEvent:
                self.metrics.monitor_events.labels(rec.topic, "invalid").inc()
                continue  # the joiner dead-letters it (decode_or_dead_letter); here it is only not observed
            self.metrics.monitor_events.labels(rec.topic, "observed").inc()
            if isinstance(event, TextEvent):
                texts.append(event.text)
            else:
                assert isinstance(event, PredictionEvent)
                self.observe_prediction(event)
        if texts:
            self.observe_texts(texts)
        for d in self.detectors:
            self.metrics.observe_detector(d)
        now = time.monotonic()
        if now - self._last_commit > 5.0:
            self._consumer.commit(self._offsets)
            self._last_commit = now
        return len(records)

    def observe_texts(self, texts: list[str]) -> None:
        granted = self.budget.take(len(texts))
        if granted < len(texts):
            self.metrics.monitor_texts.labels("sampled_out").inc(len(texts) - granted)
            texts = self._rng.sample(texts, granted)
        if not texts:
            return
        vectors, failed = self.embedder(texts)
        if failed:
            self.metrics.monitor_texts.labels("unencodable").inc(failed)
        self.metrics.monitor_texts.labels("embedded").inc(len(vectors))
        for v in vectors:
            self._detected(self.input.update(v))

    def observe_prediction(self, event: PredictionEvent) -> None:
        self._detected(self.prediction.update(event.label))
        if event.scores:
            top = max(event.scores.values())
            if np.isfinite(top):
                if len(self.confidence) == self.confidence.maxlen:
                    self._confidence_sum -= self.confidence[0]
                self.confidence.append(float(top))
                self._confidence_sum += top
                self.metrics.estimated_accuracy.set(self.estimated_accuracy)

    def _detected(self, d: Detection | None) -> None:
        if d is not None:
            self.detections.append(d)
            report_detection(d, self.metrics, self._producer, self.topics.drift, self.name, self.model_name)

    @property
    def estimated_accuracy(self) -> float:
        """Mean top-class probability of the last served predictions (label-free estimate)."""
        return self._confidence_sum / max(1, len(self.confidence))

    def status(self) -> dict[str, Any]:
        return {
            "detectors": {
                d.name: {"kind": d.kind, "seen": d.seen, "detections": d.detections, "score": d.score}
                for d in self.detectors
            },
            "estimated_accuracy": self.estimated_accuracy if self.confidence else None,
        }

    def close(self) -> None:
        try:
            self._consumer.commit(self._offsets)
            self._consumer.close()
        finally:
            self._producer.close()
