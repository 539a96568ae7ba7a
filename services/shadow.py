"""Shadow mode: before the gate decides a candidate, the candidate scores a sample of live
traffic, off the serving path.

The controller reads what the endpoint (or an application) logs to Kafka: the texts, the
serving version's predictions and, later, the feedback. A fixed share of the ids is sampled
(by a hash of the id, so a text, its prediction and its feedback are sampled together); the
candidate predicts each sampled text. Exported while it runs and kept with the gate's
figures of the version:

- ``shadow_agreement``: how often the candidate gives the label the serving version gave;
- ``shadow_accuracy`` and ``shadow_serving_accuracy``: on the sampled texts whose feedback
  arrived, how often each was right (the same texts for both).

The figures inform operators; the gate's decision stays the held-out comparison.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from services.metrics import ControllerMetrics
from streaming.errors import InvalidEvent, RegistryError
from streaming.events import FeedbackEvent, PredictionEvent, Record, TextEvent, decode
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)

BUCKETS = 10_000


def sampled(key: bytes | str | None, share: float) -> bool:
    """Whether the id ``key`` is in the sample of ``share`` of all ids."""
    if key is None:
        return False
    if isinstance(key, str):
        key = key.encode("utf-8")
    return zlib.crc32(key) % BUCKETS < share * BUCKETS


class _Bounded(OrderedDict[str, Any]):
    """An insertion-ordered dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if len(self) > self.limit:
            self.popitem(last=False)


class Shadow:
    """Scores one candidate at a time on sampled live traffic.

    :meth:`start` begins with a version; :meth:`feed` takes records of the texts, predictions
    and feedback topics (:meth:`poll` reads them from Kafka); :meth:`done` says when enough
    texts were scored or the time is up; :meth:`figures` are the results."""

    def __init__(
        self,
        stream: StreamSettings,
        load: Callable[[int], Any],
        metrics: ControllerMetrics | None = None,
        texts: int = 200,
        share: float = 0.1,
        max_s: float = 300.0,
        batch: int = 32,
        consumer: Any = None,
        clock: Callable[[], float] = time.monotonic,
        limit: int = 50_000,
    ) -> None:
        self.stream = stream
        self.load = load
        self.metrics = metrics
        self.texts, self.share, self.max_s, self.batch = texts, share, max_s, batch
        self.clock = clock
        self.limit = limit
        self.version: int | None = None
        self.error: str | None = None
        self._consumer = consumer
        self._model: Any = None
        self._reset()

    def _reset(self) -> None:
        self._started = self.clock()
        self._pending: list[tuple[str, str]] = []  # sampled (id, text) not yet predicted
        self._candidate: _Bounded = _Bounded(self.limit)  # id -> the candidate's label
        self._serving: _Bounded = _Bounded(self.limit)  # id -> the serving version's label
        self._truth: _Bounded = _Bounded(self.limit)  # id -> feedback label
        self.scored = 0

    @property
    def active(self) -> bool:
        return self.version is not None

    def start(self, version: int) -> None:
        """Shadow ``version`` from now on (what came before is not its traffic)."""
        self._reset()
        self.version, self.error = version, None
        try:
            self._model = self.load(version)
        except Exception as exc:  # missing or corrupt files: reported with the figures, the gate decides
            self._model = None
            self.error = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
            log.warning("version %d cannot be shadowed: %s", version, exc)
        if self.metrics is not None:
            self.metrics.shadow_version.set(version)
        log.info("shadowing version %d on %.0f%% of live texts", version, 100 * self.share)

    def stop(self) -> dict[str, Any]:
        """End the shadow; its figures."""
        figures = self.figures()
        self.version, self._model = None, None
        if self.metrics is not None:
            self.metrics.shadow_version.set(0)
        return figures

    def done(self) -> bool:
        return self.active and (
            self.error is not None or self.scored >= self.texts or self.clock() - self._started >= self.max_s
        )

    # input ------------------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.1) -> int:
        """Read what arrived on the topics and score it (records are read even while no
        candidate is shadowed, so a new shadow starts from the live end)."""
        if self._consumer is None:
            from streaming.kafka import Consumer

            topics = self.stream.topics
            self._consumer = Consumer(self.stream, group_id=None, client_id="streamcl-shadow")
            self._consumer.assign([topics.texts, topics.predictions, topics.feedback], from_end=True)
        records = self._consumer.poll(timeout_s, max_records=2000)
        self.feed(records)
        return len(records)

    def feed(self, records: Iterable[Record]) -> None:
        if not self.active:
            return
        topics, limit = self.stream.topics, self.stream.max_text_chars
        for rec in records:
            if not sampled(rec.key, self.share):
                continue
            try:  # malformed events are the joiner's to dead-letter; the shadow skips them
                if rec.topic == topics.texts:
                    text = decode(TextEvent, rec.value, limit)
                    if text.id not in self._candidate:
                        self._pending.append((text.id, text.text))
                elif rec.topic == topics.predictions:
                    pred = decode(PredictionEvent, rec.value, limit)
                    if pred.model_version != self.version:  # a prediction by the shadowed version itself
                        self._serving[pred.id] = pred.label
                elif rec.topic == topics.feedback:
                    fb = decode(FeedbackEvent, rec.value, limit)
                    self._truth.setdefault(fb.id, fb.label)
            except InvalidEvent:
                continue
        self._score()

    def _score(self) -> None:
        while self._pending and self._model is not None and self.scored < self.texts:
            chunk, self._pending = self._pending[: self.batch], self._pending[self.batch :]
            try:
                preds = self._model.predict([t for _, t in chunk])
            except Exception as exc:  # a candidate that cannot predict: reported, not fatal
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("shadowed version %s failed to predict: %s", self.version, self.error)
                return
            for (id_, _), p in zip(chunk, preds):
                self._candidate[id_] = p.label
            self.scored += len(chunk)
        if self.scored >= self.texts:
            self._pending.clear()
        self._export()

    # results ----------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        both = [i for i in self._candidate if i in self._serving]
        labeled = [i for i in both if i in self._truth]
        out: dict[str, Any] = {
            "shadow_version": self.version,
            "shadow_texts": self.scored,
            "shadow_compared": len(both),
            "shadow_labeled": len(labeled),
            "shadow_seconds": round(self.clock() - self._started, 1),
        }
        if both:
            out["shadow_agreement"] = round(sum(self._candidate[i] == self._serving[i] for i in both) / len(both), 4)
        if labeled:
            out["shadow_accuracy"] = round(sum(self._candidate[i] == self._truth[i] for i in labeled) / len(labeled), 4)
            out["shadow_serving_accuracy"] = round(
                sum(self._serving[i] == self._truth[i] for i in labeled) / len(labeled), 4
            )
        if self.error:
            out["shadow_error"] = self.error
        return out

    def _export(self) -> None:
        if self.metrics is None:
            return
        f = self.figures()
        self.metrics.shadow_texts.set(f["shadow_texts"])
        self.metrics.shadow_labeled.set(f["shadow_labeled"])
        if "shadow_agreement" in f:
            self.metrics.shadow_agreement.set(f["shadow_agreement"])
        if "shadow_accuracy" in f:
            self.metrics.shadow_accuracy.labels("candidate").set(f["shadow_accuracy"])
            self.metrics.shadow_accuracy.labels("serving").set(f["shadow_serving_accuracy"])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
