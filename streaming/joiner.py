"""The joiner: TextEvents ⋈ FeedbackEvents by ``id`` into LabeledExamples.

:class:`JoinState` is the pure, bounded join (either arrival order, time-to-live, maximum
count); it also pairs served predictions with feedback to measure live accuracy.
:class:`JoinerService` runs it over Kafka: decode, dead-letter what is unreadable, join,
produce, and checkpoint the pending state *with* the consumed offsets (the producer is flushed
first), so a restarted joiner continues exactly where its last checkpoint left it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.errors import ConfigError, InvalidEvent
from streaming.events import DeadLetter, FeedbackEvent, LabeledExample, PredictionEvent, Record, TextEvent, decode
from streaming.files import write_json_atomic
from streaming.kafka import Consumer, ProcessProducer, Producer
from streaming.metrics import Metrics
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    arrival: float
    data: dict[str, Any]
    where: tuple[str, int, int] = ("", -1, -1)


@dataclass(slots=True)
class Expired:
    """What left the join state unjoined: a count of texts, and feedback to dead-letter."""

    texts: int = 0
    feedback: list[DeadLetter] = field(default_factory=list)


class RollingAccuracy:
    """Accuracy over the last ``window`` outcomes, overall and per domain."""

    def __init__(self, window: int = 500) -> None:
        self.window = window
        self._all: deque[bool] = deque(maxlen=window)
        self._domains: dict[str, deque[bool]] = {}
        self.totals = {"correct": 0, "wrong": 0}

    def add(self, correct: bool, domain: str | None) -> None:
        self._all.append(correct)
        self.totals["correct" if correct else "wrong"] += 1
        if domain is not None:
            self._domains.setdefault(domain, deque(maxlen=self.window)).append(correct)

    @property
    def value(self) -> float | None:
        return sum(self._all) / len(self._all) if self._all else None

    def per_domain(self) -> dict[str, float]:
        return {d: sum(q) / len(q) for d, q in self._domains.items() if q}


class JoinState:
    """Pending texts, feedback and predictions, bounded by ``ttl_s`` and ``max_pending``."""

    def __init__(self, ttl_s: float, max_pending: int) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._texts: OrderedDict[str, _Pending] = OrderedDict()
        self._feedback: OrderedDict[str, _Pending] = OrderedDict()
        self._predictions: OrderedDict[str, _Pending] = OrderedDict()
        # Labels of recently joined ids, to score a prediction that arrives after its feedback.
        self._recent: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.live = RollingAccuracy()
        self._evicted = Expired()

    def __len__(self) -> int:
        return len(self._texts) + len(self._feedback)

    def pending(self) -> dict[str, int]:
        return {"text": len(self._texts), "feedback": len(self._feedback), "prediction": len(self._predictions)}

    def add_text(self, ev: TextEvent, now: float) -> LabeledExample | None:
        fb = self._feedback.pop(ev.id, None)
        if fb is not None:
            return self._joined(ev.id, ev.text, ev.domain, fb.data["label"], ev.ts)
        self._texts.pop(ev.id, None)
        self._texts[ev.id] = _Pending(now, {"text": ev.text, "domain": ev.domain, "ts": ev.ts})
        self._bound()
        return None

    def add_feedback(self, ev: FeedbackEvent, now: float, where: tuple[str, int, int]) -> LabeledExample | None:
        text = self._texts.pop(ev.id, None)
        if text is not None:
            d = text.data
            return self._joined(ev.id, d["text"], d["domain"], ev.label, d["ts"])
        self._feedback.pop(ev.id, None)
        self._feedback[ev.id] = _Pending(now, {"label": ev.label, "ts": ev.ts}, where)
        self._bound()
        return None

    def add_prediction(self, ev: PredictionEvent, now: float) -> None:
        if ev.label is None:
            return
        recent = self._recent.get(ev.id)
        if recent is not None:
            self.live.add(ev.label == recent[0], recent[1])
            return
        self._predictions.pop(ev.id, None)
        self._predictions[ev.id] = _Pending(now, {"label": ev.label, "version": ev.model_version})
        while len(self._predictions) > self.max_pending:
            self._predictions.popitem(last=False)

    def _joined(self, id_: str, text: str, domain: str | None, label: str, ts: float) -> LabeledExample:
        pred = self._predictions.pop(id_, None)
        if pred is not None:
            self.live.add(pred.data["label"] == label, domain)
        else:
            self._recent[id_] = (label, domain)
            if len(self._recent) > 10_000:
                self._recent.popitem(last=False)
        return LabeledExample(id=id_, text=text, label=label, ts=ts, domain=domain)

    def _bound(self) -> None:
        while len(self) > self.max_pending:
            t = next(iter(self._texts.values()), None)
            f = next(iter(self._feedback.values()), None)
            if f is None or (t is not None and t.arrival <= f.arrival):
                self._texts.popitem(last=False)
                self._evicted.texts += 1
            else:
                id_, fb = self._feedback.popitem(last=False)
                self._evicted.feedback.append(self._dead(id_, fb, "evicted: join state full"))

    def _dead(self, id_: str, fb: _Pending, why: str) -> DeadLetter:
        topic, partition, offset = fb.where
        raw = FeedbackEvent(id=id_, label=fb.data["label"], ts=fb.data["ts"]).to_bytes()
        return DeadLetter.for_message(
            topic,
            partition,
            offset,
            raw,
            "unjoined_feedback",
            f"no text with id {id_!r} within the join window ({why})",
        )

    def expire(self, now: float) -> Expired:
        """Drop what waited longer than the time-to-live (and what the bound evicted)."""
        out, self._evicted = self._evicted, Expired()
        cutoff = now - self.ttl_s
        while self._texts and next(iter(self._texts.values())).arrival < cutoff:
            self._texts.popitem(last=False)
            out.texts += 1
        while self._feedback and next(iter(self._feedback.values())).arrival < cutoff:
            id_, fb = self._feedback.popitem(last=False)
            out.feedback.append(self._dead(id_, fb, f"waited {self.ttl_s:g}s"))
        while self._predictions and next(iter(self._predictions.values())).arrival < cutoff:
            self._predictions.popitem(last=False)
        return out

    def to_json(self) -> dict[str, Any]:
        def dump(d: OrderedDict[str, _Pending]) -> list[list[Any]]:
            return [[k, p.arrival, p.data, list(p.where)] for k, p in d.items()]

        return {"texts": dump(self._texts), "feedback": dump(self._feedback), "predictions": dump(self._predictions)}

    def load_json(self, state: dict[str, Any]) -> None:
        for name, target in (("texts", self._texts), ("feedback", self._feedback), ("predictions", self._predictions)):
            target.clear()
            for k, arrival, data, where in state.get(name, []):
                target[k] = _Pending(arrival, data, tuple(where))  # type: ignore[arg-type]


class JoinerService:
    """Consumes texts, feedback and predictions; produces labeled examples and dead letters."""

    name = "joiner"

    def __init__(
        self,
        settings: StreamSettings,
        metrics: Metrics,
        checkpoint_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topics = settings.topics
        self.shard = shard
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index} of {count}: need 0 <= index < count")
        name = "checkpoint.json" if count == 1 else f"checkpoint-{index}-of-{count}.json"
        self.checkpoint_path = checkpoint_path or settings.state_dir / "joiner" / name
        self.clock = clock
        self.state = JoinState(settings.join_ttl_s, settings.join_max_pending)
        offsets: dict[str, int] = {}
        if self.checkpoint_path.exists():
            saved = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
            self.state.load_json(saved["state"])
            offsets = saved["offsets"]
            log.info("joiner resumes from its checkpoint: %d pending", len(self.state))
        self._producer: Producer | ProcessProducer = (
            ProcessProducer(settings, client_id="streamcl-joiner")
            if settings.join_producer_process
            else Producer(settings, client_id="streamcl-joiner")
        )
        self._consumer = Consumer(settings, group_id=f"{settings.consumer_group}.joiner", client_id="streamcl-joiner")
        try:
            topics = [self.topics.texts, self.topics.feedback, self.topics.predictions]
            # A text, its feedback and its prediction share a key (the id), so the same partition
            # number of each topic when they have as many partitions: joiner i of n reads
            # partitions i, i + n, ... of all three.
            counts = {t: len(self._consumer.partitions(t)) for t in topics}
            if len(set(counts.values())) > 1:
                raise ConfigError(
                    f"the joiner needs texts, feedback and predictions co-partitioned (as many partitions "
                    f"each), found {counts}: give them the same partition count"
                )
            mine = [f"{t}:{n}" for t in topics for n in range(counts[t]) if n % count == index]
            if not mine:
                per_topic = counts[topics[0]]
                log.warning("joiner %d of %d has no partition (%d per topic): it stays idle", index, count, per_topic)
            stale = {k: v for k, v in self._consumer.committed(mine).items() if v > offsets.get(k, v)}
            if stale:  # a joiner of another layout went further since this checkpoint
                log.warning(
                    "joiner checkpoint %s is older than the group's committed offsets %s: starting from those "
                    "with an empty join state",
                    self.checkpoint_path,
                    stale,
                )
                self.state = JoinState(settings.join_ttl_s, settings.join_max_pending)
                offsets = {}
            self._offsets = self._consumer.assign(topics, offsets, shard=shard)
        except BaseException:
            self._consumer.close()
            self._producer.close()
            raise
        # throttle policy: hold back while the learner is too far behind, with the join clock
        # stopped (nothing expires for the wait it causes)
        self._learner: Consumer | None = None
        self._learner_from: dict[str, int] = {}
        self._throttled, self._last_throttle_check, self._paused_s = False, 0.0, 0.0
        if settings.backlog_policy == "throttle":
            self._learner = Consumer(
                settings, group_id=f"{settings.consumer_group}.learner", client_id="streamcl-joiner-throttle"
            )
            self._learner_from = self._learner.assign([self.topics.labeled])
        self._last_checkpoint = time.monotonic()
        self._last_expire = 0.0
        self._dirty = False
        self.counts = {"consumed": 0, "joined": 0, "dlq": 0, "expired": 0}
        self._live_seen = {"correct": 0, "wrong": 0}

    def learner_backlog(self) -> int:
        """Labeled examples past the learner group's committed offsets (throttle policy)."""
        assert self._learner is not None
        ends = self._learner.end_offsets()
        done = {**self._learner_from, **self._learner.committed(ends)}
        return sum(max(0, end - done.get(key, 0)) for key, end in ends.items())

    def _hold_back(self, timeout_s: float) -> bool:
        """Throttle policy: True (after waiting ``timeout_s``) while the learner is behind."""
        if self._learner is None:
            return False
        now = time.monotonic()
        if now - self._last_throttle_check >= 2.0:
            self._last_throttle_check = now
            throttled = self.learner_backlog() > self.settings.backlog_max
            if throttled != self._throttled:
                what = "more than backlog_max behind: joining held back" if throttled else "caught up: joining resumes"
                log.warning("the learner is %s", what)
            self._throttled = throttled
            self.metrics.join_throttled.set(int(throttled))
        if not self._throttled:
            return False
        time.sleep(timeout_s)
        self._paused_s += time.monotonic() - now
        return True

    def _now(self) -> float:
        """The join clock: wall time minus the time held back by the throttle."""
        return self.clock() - self._paused_s

    def step(self, timeout_s: float = 0.2) -> int:
        """Poll once, handle what came, expire and checkpoint when due; returns records read."""
        if self._hold_back(timeout_s):
            return 0
        records = self._consumer.poll(timeout_s, max_records=5000)
        if records:
            self.handle(records)
        now = time.monotonic()
        if now - self._last_expire >= 1.0:
            self._last_expire = now
            self._expire()
        if self._dirty and now - self._last_checkpoint >= self.settings.join_checkpoint_s:
            self.checkpoint()
        return len(records)

    def handle(self, records: list[Record]) -> None:
        t = self.topics
        max_chars = self.settings.max_text_chars
        now = self._now()
        state, publish, labeled = self.state, self._producer.publish, t.labeled
        ok: dict[str, int] = {}
        bad: dict[str, int] = {}
        joined = 0
        for rec in records:
            topic = rec.topic
            try:
                if topic == t.feedback:
                    out = state.add_feedback(
                        decode(FeedbackEvent, rec.value, max_chars), now, (topic, rec.partition, rec.offset)
                    )
                elif topic == t.texts:
                    out = state.add_text(decode(TextEvent, rec.value, max_chars), now)
                else:
                    state.add_prediction(decode(PredictionEvent, rec.value, max_chars), now)
                    out = None
            except InvalidEvent as exc:
                self._dead_letter(rec.dead_letter(exc.reason, exc.detail))
                bad[topic] = bad.get(topic, 0) + 1
            else:
                ok[topic] = ok.get(topic, 0) + 1
                if out is not None:
                    publish(labeled, out)
                    joined += 1
            self._offsets[f"{topic}:{rec.partition}"] = rec.offset + 1
        if isinstance(self._producer, ProcessProducer):
            self._producer.ship()
        # Metrics once per poll, not per message.
        m = self.metrics
        for topic, n in ok.items():
            m.consumed.labels(topic, "ok").inc(n)
        for topic, n in bad.items():
            m.consumed.labels(topic, "dlq").inc(n)
        if joined:
            m.produced.labels(labeled).inc(joined)
            m.joined.inc(joined)
        self.counts["joined"] += joined
        self.counts["consumed"] += len(records)
        self._dirty = True
        self._publish_gauges()

    def _dead_letter(self, dead: DeadLetter) -> None:
        self._producer.publish(self.topics.dlq, dead, key=f"{dead.source_topic}:{dead.partition}:{dead.offset}")
        self.metrics.dlq.labels(dead.reason).inc()
        self.metrics.produced.labels(self.topics.dlq).inc()
        self.counts["dlq"] += 1

    def _expire(self) -> None:
        gone = self.state.expire(self._now())
        if gone.texts:
            self.metrics.join_expired.inc(gone.texts)
            self.counts["expired"] += gone.texts
            self._dirty = True
        for dead in gone.feedback:
            self._dead_letter(dead)
            self._dirty = True
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        for kind, n in self.state.pending().items():
            self.metrics.join_pending.labels(kind).set(n)
        for outcome, total in self.state.live.totals.items():
            counter = self.metrics.live_scored.labels(outcome)
            if total > self._live_seen[outcome]:
                counter.inc(total - self._live_seen[outcome])
                self._live_seen[outcome] = total
        live = self.state.live.value
        if live is not None:
            self.metrics.live.set(live)
            for domain, acc in self.state.live.per_domain().items():
                self.metrics.live_domain.labels(domain).set(acc)

    def checkpoint(self) -> None:
        """Flush what was produced, then save state with offsets, then commit the offsets."""
        self._producer.flush()
        write_json_atomic(self.checkpoint_path, {"offsets": self._offsets, "state": self.state.to_json()})
        self._consumer.commit(self._offsets)
        self._last_checkpoint = time.monotonic()
        self._dirty = False

    def status(self) -> dict[str, Any]:
        return {
            **self.counts,
            "pending": self.state.pending(),
            "live_accuracy": self.state.live.value,
            "partitions": sorted(self._offsets),
        }

    def close(self) -> None:
        try:
            self.checkpoint()
        finally:
            self._consumer.close()
            self._producer.close()
            if self._learner is not None:
                self._learner.close()
