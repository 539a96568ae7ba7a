"""The joiner: TextEvents ⋈ FeedbackEvents by ``id`` into LabeledExamples.

:class:`~streaming._join.JoinState` is the pure, bounded join (either arrival order,
time-to-live, maximum count); it also pairs served predictions with feedback to measure live
accuracy. :class:`JoinerService` runs it over Kafka: decode, dead-letter what is unreadable,
join, produce, and checkpoint the pending state *with* the consumed offsets (the producer is
flushed first), so a restarted joiner continues exactly where its last checkpoint left it.
A step that fails (a send the broker never acknowledged, a broker away) first puts the join
state and the consumer back to the last checkpoint, so nothing since is lost: it is read and
joined again (at-least-once into the labeled topic; the learner refuses an id it already took).
The first text and the first label of an id win: a repeat is dropped and counted.
:class:`JoinerMetrics` are the metrics it reports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from streaming._join import DUPLICATE_KINDS, JoinState, forget_durable
from streaming.accuracy import RollingAccuracy
from streaming.deadletter import DeadLetterPolicy, Outcomes, count_consumed, dead_letter, decode_or_dead_letter
from streaming.errors import ConfigError
from streaming.events import DeadLetter, DomainCap, FeedbackEvent, PredictionEvent, Record, TextEvent
from streaming.failpoints import failpoint
from streaming.files import write_json_atomic
from streaming.kafka import Consumer, Offsets, ProcessProducer, Producer
from streaming.metrics import MetricGroup, at_zero
from streaming.pii import masker_for
from streaming.settings import StreamSettings

__all__ = ["JoinerMetrics", "JoinerService", "capped_live_accuracy"]

log = logging.getLogger(__name__)


class JoinerMetrics(MetricGroup):
    """The joiner's metrics: the join, its throttle, and the live accuracy of served predictions."""

    def __init__(self, registry: CollectorRegistry, shared: MetricGroup | None = None) -> None:
        super().__init__(registry, shared)
        r = registry
        self.joined = Counter("streamcl_join_joined", "Texts joined with their feedback", registry=r)
        self.join_expired = Counter(
            "streamcl_join_expired", "Texts whose feedback never came within the join window", registry=r
        )
        self.join_pending = at_zero(
            Gauge("streamcl_join_pending", "Texts and feedback waiting for their pair", ["kind"], registry=r),
            ("text", "feedback", "prediction"),
        )
        self.duplicates = at_zero(
            Counter(
                "streamcl_joiner_duplicates",
                "Texts and feedback dropped as repeats of an id pending or joined recently (the first wins)",
                ["kind"],
                registry=r,
            ),
            DUPLICATE_KINDS,
        )
        self.join_throttled = Gauge(
            "streamcl_join_throttled",
            "1 while the joiner holds back because the learner is more than backlog_max behind (throttle policy)",
            registry=r,
        )
        # live accuracy: served predictions joined with feedback
        self.live = Gauge("streamcl_live_accuracy", "Accuracy of served predictions that received feedback", registry=r)
        self.live_domain = Gauge("streamcl_live_domain_accuracy", "Live accuracy per domain", ["domain"], registry=r)
        self.live_scored = at_zero(
            Counter("streamcl_live_scored", "Served predictions that received feedback", ["outcome"], registry=r),
            ("correct", "wrong"),
        )


class _CappedAccuracy(RollingAccuracy):
    """Rolling accuracy whose domains past a :class:`~streaming.events.DomainCap` fold into
    ``other``: one window and one ``streamcl_live_domain_accuracy`` series per tracked domain."""

    def __init__(self, cap: DomainCap) -> None:
        super().__init__()
        self._cap = cap

    def add(self, correct: bool, domain: str | None) -> None:
        super().add(correct, self._cap.fold(domain))


def capped_live_accuracy(max_domains: int) -> RollingAccuracy:
    """The joiner's live accuracy, tracking at most ``max_domains`` domains (the rest: ``other``)."""
    return _CappedAccuracy(DomainCap(max_domains))


class JoinerService:
    """Consumes texts, feedback and predictions; produces labeled examples and dead letters."""

    name = "joiner"

    def __init__(
        self,
        settings: StreamSettings,
        metrics: JoinerMetrics,
        checkpoint_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        shard: tuple[int, int] = (0, 1),
        producer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        """``producer_overrides`` are kafka-python producer settings (``delivery_timeout_ms``…)
        for the in-process producer; they need ``join_producer_process=False``."""
        if producer_overrides and settings.join_producer_process:
            raise ValueError("producer_overrides need join_producer_process=False")
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
        # texts applications write to the texts topic themselves are masked here, before the join
        # state, its checkpoint, the labeled topic or the DLQ hold them (STREAMCL_PII=mask)
        self._masker = masker_for(settings)
        self._dlq_policy = DeadLetterPolicy(settings.dlq_payload_bytes, self._masker)
        offsets = self._resume()
        self._producer: Producer | ProcessProducer = (
            ProcessProducer(settings, client_id="streamcl-joiner", metrics=metrics)
            if settings.join_producer_process
            else Producer(settings, client_id="streamcl-joiner", metrics=metrics, **(producer_overrides or {}))
        )
        try:
            self._consumer = Consumer(settings, group_id=settings.group("joiner"), client_id="streamcl-joiner")
        except BaseException:
            self._producer.close()  # a broker that is down at start: the host retries the whole build
            raise
        try:
            self._offsets = self._assign(offsets)
        except BaseException:
            self._consumer.close()
            self._producer.close()
            raise
        self._durable = (dict(self._offsets), self.state.to_json())  # what a failed step goes back to
        self._stepping = threading.Lock()  # an erasure (another thread: the actor's call) waits for the step
        self._start_throttle()
        self._last_checkpoint = time.monotonic()
        self._last_expire = 0.0
        self._dirty = False
        self._unsaved = 0  # pairs produced since the last checkpoint
        self.counts = {"consumed": 0, "joined": 0, "dlq": 0, "expired": 0}
        self._live_seen = {"correct": 0, "wrong": 0}
        self._duplicates_seen = dict.fromkeys(DUPLICATE_KINDS, 0)

    def _resume(self) -> dict[str, int]:
        """Load the join state from the checkpoint, if any; returns the offsets it covers."""
        self.state = self._new_state()
        if not self.checkpoint_path.exists():
            return {}
        saved = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
        self.state.load_json(saved["state"])
        log.info("joiner resumes from its checkpoint: %d pending", len(self.state))
        return dict(saved["offsets"])

    def _new_state(self) -> JoinState:
        """An empty join state whose live accuracy tracks at most STREAMCL_MAX_DOMAINS domains."""
        state = JoinState(self.settings.join_ttl_s, self.settings.join_max_pending)
        state.live = capped_live_accuracy(self.settings.max_domains)
        return state

    def _assign(self, offsets: dict[str, int]) -> Offsets:
        """Take this shard's partitions, from the checkpoint's offsets unless the group went further."""
        index, count = self.shard
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
            self.state = self._new_state()
            offsets = {}
        return self._consumer.assign(topics, offsets, shard=self.shard)

    def _start_throttle(self) -> None:
        """Throttle policy: hold back while the learner is too far behind, with the join clock
        stopped (nothing expires for the wait it causes)."""
        self._learner: Consumer | None = None
        self._learner_from: dict[str, int] = {}
        self._throttled, self._last_throttle_check, self._paused_s = False, 0.0, 0.0
        if self.settings.backlog_policy == "throttle":
            self._learner = Consumer(
                self.settings, group_id=self.settings.group("learner"), client_id="streamcl-joiner-throttle"
            )
            self._learner_from = self._learner.assign([self.topics.labeled])

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
        """Poll once, handle what came, expire and checkpoint when due; returns records read.
        If any of it raises, the joiner is back at its last checkpoint first (:meth:`rewind`)."""
        with self._stepping:
            try:
                return self._step(timeout_s)
            except Exception:
                self.rewind()
                raise

    def forget(self, ids: list[str]) -> dict[str, Any]:
        """Erase ``ids`` between two steps: from the pending state and the last checkpoint (the
        joined ids stay known, so a text read again is not joined again)."""
        with self._stepping:
            dropped = self.state.forget(ids)
            self._durable = forget_durable(self.checkpoint_path, self._durable, ids)
            self._publish_gauges()
        return {"shard": list(self.shard), "pending_dropped": dropped}

    def _step(self, timeout_s: float) -> int:
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
        max_chars, producer, dlq, m = self.settings.max_text_chars, self._producer, t.dlq, self.metrics
        now = self._now()
        state, publish, labeled, masker = self.state, producer.publish, t.labeled, self._masker
        outcomes: Outcomes = {}  # metrics once per poll, not per message
        joined = 0
        for rec in records:
            topic = rec.topic
            kind = FeedbackEvent if topic == t.feedback else TextEvent if topic == t.texts else PredictionEvent
            event = decode_or_dead_letter(kind, rec, max_chars, producer, dlq, m, outcomes, self._dlq_policy)
            out = None
            if isinstance(event, FeedbackEvent):
                out = state.add_feedback(event, now, (topic, rec.partition, rec.offset))
            elif isinstance(event, TextEvent):
                if masker is not None:
                    event = event.model_copy(update={"text": masker.mask(event.text)})
                out = state.add_text(event, now)
            elif isinstance(event, PredictionEvent):
                state.add_prediction(event, now)
            else:
                self.counts["dlq"] += 1
            if out is not None:
                publish(labeled, out)
                joined += 1
            self._offsets[f"{topic}:{rec.partition}"] = rec.offset + 1
        if isinstance(producer, ProcessProducer):
            producer.ship()
        count_consumed(m, outcomes)
        if joined:
            m.produced.labels(labeled).inc(joined)
            m.joined.inc(joined)
        self.counts["joined"] += joined
        self._unsaved += joined
        self.counts["consumed"] += len(records)
        self._dirty = True
        self._publish_gauges()

    def _dead_letter(self, dead: DeadLetter) -> None:
        dead_letter(dead, self._producer, self.topics.dlq, self.metrics, self._dlq_policy)
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
        for counter, totals, seen in (
            (self.metrics.live_scored, self.state.live.totals, self._live_seen),
            (self.metrics.duplicates, self.state.duplicates, self._duplicates_seen),
        ):
            for label, total in totals.items():
                if total > seen[label]:
                    counter.labels(label).inc(total - seen[label])
                    seen[label] = total
        live = self.state.live.value
        if live is not None:
            self.metrics.live.set(live)
            for domain, acc in self.state.live.per_domain().items():
                self.metrics.live_domain.labels(domain).set(acc)

    def rewind(self) -> None:
        """Back to the last checkpoint: its join state and offsets. Whatever was read since is
        read and joined again, so a pair whose send failed is produced again, not lost; one
        whose send succeeded is produced twice (at-least-once)."""
        offsets, state = self._durable
        self.state.restore(state)
        self._offsets = dict(offsets)
        self._consumer.seek(offsets)
        self._dirty = False
        self._unsaved = 0
        self._publish_gauges()
        log.warning("joiner back at its last checkpoint (%d pending): reading from %s again", len(self.state), offsets)

    def checkpoint(self) -> None:
        """Flush what was produced, then save state with offsets, then commit the offsets.
        Raises :class:`~streaming.kafka.SendFailed` if the broker did not acknowledge every
        output: nothing is saved then (a failed :meth:`step` rewinds to the last checkpoint)."""
        self._producer.flush()
        if self._unsaved:
            failpoint("joiner.after_send")
        state = self.state.to_json()
        write_json_atomic(self.checkpoint_path, {"offsets": self._offsets, "state": state})
        self._durable = (dict(self._offsets), state)
        self._consumer.commit(self._offsets)
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        self._unsaved = 0

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
