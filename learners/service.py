"""The learner loop over Kafka: consume ``labeled`` in micro-batches, predict-then-train, and
every N examples or T seconds write a version (weights + consumed offsets) to the registry,
publish its ModelEvent, and only then commit the offsets it covers.

The loop reads consume -> train -> version; drift adaptation is a
:class:`~learners.adaptation.DriftAdapter`, writing and pruning versions a
:class:`~learners.versioning.Versioner`. One learner writes a model's versions: it holds the
registry's lease (:class:`~learners.registry.LeaseError` for a second one at start), renews it
as it runs, and writes no version once another learner took it over.

Exactly once into training: the offsets a version covers are in the version, so a restarted
learner reads on from there; and an id the lineage already took (a joiner restarted, feedback
sent twice) is not trained again but listed as ``duplicate`` (:mod:`learners.dedupe`): the
first of an id wins.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from learners.adaptation import DriftAdapter
from learners.base import Example
from learners.dedupe import seen_at
from learners.erasure import ERASED, REFUSED, Erasures, erase_retained, forget_state, retained_texts
from learners.evaluation import Holdout
from learners.lora import adapters_of
from learners.metrics import LearnerMetrics
from learners.model import TextClassifier, set_threads
from learners.registry import PROCESS_OWNER, VersionMeta, registry_for
from learners.settings import LearnerSettings
from learners.strategies import build_learner
from learners.versioning import Versioner, bootstrap_registry
from streaming.accuracy import RollingAccuracy
from streaming.deadletter import DeadLetterPolicy, dead_letter, decode_or_dead_letter
from streaming.drift import Detection
from streaming.errors import RegistryError
from streaming.events import DomainCap, LabeledExample, ModelEvent, Record
from streaming.failpoints import failpoint
from streaming.kafka import Consumer, Producer, offset_key
from streaming.pii import masker_for
from streaming.runtime import report_detection
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)


#: Most records one step reads while catching up on a backlog (it trains on batch_size of them).
CATCH_UP_RECORDS = 2000
#: Seconds a learner's lease lasts unrenewed: a learner killed without closing blocks its
#: successor's start this long at most. Renewed every LEASE_RENEW_S and before each version.
LEASE_TTL_S = 10.0
LEASE_RENEW_S = 2.0


def over_label_limit(batch: list[LabeledExample], known: list[str], max_labels: int) -> list[LabeledExample]:
    """The examples of ``batch`` whose label is new once ``max_labels`` labels are known (each
    label is a row of the head and a score in every answer: STREAMCL_MAX_LABELS bounds them)."""
    labels, refused = set(known), []
    for ev in batch:
        if ev.label not in labels:
            if len(labels) >= max_labels:
                refused.append(ev)
            else:
                labels.add(ev.label)
    return refused


class LearnerService:
    """Predict-then-train over the labeled topic, versioning as it goes."""

    name = "learner"

    def __init__(
        self, stream: StreamSettings, settings: LearnerSettings, metrics: LearnerMetrics, owner: str = PROCESS_OWNER
    ) -> None:
        set_threads(settings.torch_threads)
        self.stream = stream
        self.settings = settings
        self.metrics = metrics
        self.topics = stream.topics
        self.registry = registry_for(stream, settings)
        self.lease = self.registry.acquire_lease(owner, LEASE_TTL_S)  # LeaseError: another learner runs
        self._renewed = time.monotonic()
        bootstrap_registry(self.registry, settings)
        base = self._resume()
        self.parent: int = base.version
        self.prequential = RollingAccuracy(settings.prequential_window)
        # past STREAMCL_MAX_DOMAINS, domains fold into "other" (prequential, held-out, metrics, memory)
        self._domains = DomainCap(stream.max_domains, known=self.holdout.seen)
        self.trained_total = base.metrics.examples_trained
        self._producer = Producer(stream, client_id="streamcl-learner", metrics=metrics)
        self._dlq_policy = DeadLetterPolicy(stream.dlq_payload_bytes, masker_for(stream))  # STREAMCL_DLQ_*, _PII
        if base.status == "candidate" and base.parent is not None:
            # its ModelEvent may have died with the learner that wrote it (the controller ignores
            # a candidate it already decided); sent with the next version's flush
            self._announce(base)
        self._consumer = Consumer(stream, group_id=stream.group("learner"), client_id="streamcl-learner")
        self._offsets = self._consumer.assign([self.topics.labeled], base.offsets)
        if any(self._offsets.get(k, v) < v for k, v in base.offsets.items()):
            # the checkpoint is past the topic's end: a new, empty broker, whose stream starts over
            log.warning("the labeled topic starts over (a new broker): the window of taken ids starts empty")
            self._seen.clear()
        drift_events: Consumer | None = None
        if set(settings.drift_act_on) - {"concept"}:
            drift_events = Consumer(stream, group_id=stream.group("learner-drift"), client_id="streamcl-learner")
            # a new group acts on drift from now on, not on the topic's history
            drift_events.assign([self.topics.drift], from_end=True)
        self.drift = DriftAdapter(settings, self.learner, metrics, self._snapshot, drift_events, stream.max_text_chars)
        self.versions = Versioner(
            self.registry, settings, metrics, self.model, self.learner, self.holdout, self.prequential, self._seen
        )
        self._last_lag = 0.0
        self._lag = 0
        self._backlog_rng = random.Random(settings.seed)
        self.erasures = Erasures()  # operators' erasures, applied between steps
        metrics.labels_known.set(len(self.model.labels))
        log.info("learner starts from version %d at offsets %s", self.parent, self._offsets)

    def _resume(self) -> VersionMeta:
        """Load the newest version that loads whole (weights, learner state, held-out samples,
        the ids it took) and return its metadata; a corrupt or partial one is skipped, loudly,
        for the one before it, and the new lineage continues from there."""
        s = self.settings
        for meta in reversed(self.registry.versions()):
            if meta.pruned:
                continue
            try:
                folder = self.registry.local_path(meta.version)
                model = TextClassifier.load(folder)
                learner = build_learner(s, model)
                learner.load_state(folder)
                adapters = adapters_of(model)
                if adapters is not None:
                    adapters.load(folder)  # the adapters over their base matrices (the version holds them merged)
                holdout = Holdout(s.eval_holdout_every, s.eval_per_domain, s.eval_recent)
                holdout.load(folder)
                seen = seen_at(self.registry, meta, folder, s.dedupe_window)
            except Exception as exc:  # checksum, truncated safetensors, bad JSON: all mean "do not resume here"
                log.error(
                    "CANNOT RESUME from version %s (%s: %s): falling back to the version before it",
                    meta.version,
                    type(exc).__name__,
                    exc,
                )
                self.metrics.checkpoint_fallbacks.inc()
                continue
            self.model, self.learner, self.holdout, self._seen = model, learner, holdout, seen
            return meta
        raise RegistryError(f"{self.registry.uri}: no version can be resumed (every one is pruned or corrupt)")

    def _behind(self) -> int:
        """Labeled examples beyond ``backlog_max`` the learner is behind (sample policy; 0
        otherwise). The lag is read every 2 s, and at every step while catching up."""
        now = time.monotonic()
        if now - self._last_lag > 2.0 or self._lag > self.stream.backlog_max:
            self._last_lag = now
            self._lag = self._consumer.lag()
            self.metrics.learner_lag.set(self._lag)
        if self.stream.backlog_policy != "sample":
            return 0
        return max(0, self._lag - self.stream.backlog_max)

    def _sample_backlog(self, batch: list[LabeledExample]) -> tuple[list[LabeledExample], list[str]]:
        """A uniform random sample of ``batch_size`` of ``batch`` (in stream order), and the ids
        of the rest, which the backlog policy skips."""
        n = self.settings.batch_size
        if len(batch) <= n:
            return batch, []
        keep = set(self._backlog_rng.sample(range(len(batch)), n))
        return [ev for i, ev in enumerate(batch) if i in keep], [ev.id for i, ev in enumerate(batch) if i not in keep]

    def _renew_lease(self, now: bool = False) -> None:
        """Keep the lease (every LEASE_RENEW_S, or ``now``); LeaseError once another learner took it."""
        if now or time.monotonic() - self._renewed >= LEASE_RENEW_S:
            self.lease = self.registry.renew_lease(self.lease, LEASE_TTL_S)
            self._renewed = time.monotonic()

    def step(self, timeout_s: float = 0.5) -> int:
        self._renew_lease()
        self.erasures.run(self.erase)
        records = self._gather(timeout_s, self.settings.batch_size + min(self._behind(), CATCH_UP_RECORDS))
        self._lag = max(0, self._lag - len(records))
        decoded: list[tuple[Record, LabeledExample]] = []
        skipped: list[str] = []
        offsets: dict[str, int] = {}
        for rec in records:
            ev = decode_or_dead_letter(
                LabeledExample,
                rec,
                self.stream.max_text_chars,
                self._producer,
                self.topics.dlq,
                self.metrics,
                policy=self._dlq_policy,
            )
            if ev is not None:
                decoded.append((rec, ev))
            else:
                skipped.append(f"{rec.topic}:{rec.partition}:{rec.offset}")
            offsets[offset_key(rec.topic, rec.partition)] = rec.offset + 1
        batch = self._within_label_limit(decoded, skipped)
        batch, duplicates = self._split_duplicates(batch)
        batch, dropped = self._sample_backlog(batch)
        fired: list[Detection] = []
        try:
            if batch:
                fired = self.train(batch)
        except BaseException:
            # not consumed: read the batch again (the next version's offsets never cover an
            # example that was not taken into training)
            self._consumer.seek(self._offsets)
            raise
        self._offsets.update(offsets)
        self.versions.consumed("skipped", skipped)
        self._refuse(duplicates)
        if dropped:
            self.versions.consumed("backlog_skipped", dropped)
            self.metrics.backlog_skipped.inc(len(dropped))
        self._adapt(fired)  # after the batch is booked: a snapshot covers its offsets and its ids
        self.drift.poll_events()
        if self.versions.due():
            self.write_version()
        return len(records)

    def _gather(self, timeout_s: float, most: int) -> list[Record]:
        """What has arrived: the first poll waits up to ``timeout_s``; once something came, more is
        read for at most ``batch_wait_ms`` (or until ``most`` records), so a trickle of feedback
        trains in a few micro-batches rather than one example at a time, and soon."""
        records = self._consumer.poll(timeout_s, max_records=most)
        wait_s = self.settings.batch_wait_ms / 1000
        if not records or wait_s <= 0 or len(records) >= min(most, self.settings.batch_size):
            return records
        deadline = time.monotonic() + wait_s
        while len(records) < min(most, self.settings.batch_size) and (left := deadline - time.monotonic()) > 0:
            records += self._consumer.poll(left, max_records=most - len(records))
        return records

    def _within_label_limit(
        self, decoded: list[tuple[Record, LabeledExample]], skipped: list[str]
    ) -> list[LabeledExample]:
        """The examples within STREAMCL_MAX_LABELS; each one whose new label would pass it is
        dead-lettered (``label_limit``) and its id added to ``skipped``."""
        limit = self.stream.max_labels
        refused = {id(ev) for ev in over_label_limit([ev for _, ev in decoded], self.model.labels, limit)}
        for rec, ev in decoded:
            if id(ev) in refused:
                detail = f"a new label past STREAMCL_MAX_LABELS={limit} (the model has {len(self.model.labels)})"
                dead = rec.dead_letter("label_limit", detail)
                dead_letter(dead, self._producer, self.topics.dlq, self.metrics, self._dlq_policy)
                skipped.append(ev.id)
        return [ev for _, ev in decoded if id(ev) not in refused]

    def _split_duplicates(self, labeled: list[LabeledExample]) -> tuple[list[LabeledExample], list[str]]:
        """The examples whose id the lineage has not taken (the first of an id in ``labeled``
        too), and the ids of the others; an erased id is never taken again (lineage: ``erased_refused``)."""
        seen = self.versions.seen
        erased = [ev.id for ev in labeled if seen.is_erased(ev.id)]
        if erased:
            self.versions.lineage.setdefault(REFUSED, []).extend(erased)
            log.warning("%d labeled examples of erased ids were not trained: %s", len(erased), erased[:5])
            labeled = [ev for ev in labeled if not seen.is_erased(ev.id)]
        first = seen.first_seen([ev.id for ev in labeled])
        return [ev for ev, ok in zip(labeled, first) if ok], [ev.id for ev, ok in zip(labeled, first) if not ok]

    def _refuse(self, duplicates: list[str]) -> None:
        """Record ids read again and not trained again (once their batch is consumed)."""
        if duplicates:
            self.versions.consumed("duplicate", duplicates)
            self.metrics.duplicates.inc(len(duplicates))
            log.info("%d labeled examples read again were not trained again: %s", len(duplicates), duplicates[:5])

    def train(self, labeled: list[LabeledExample]) -> list[Detection]:
        """Predict-then-train on ``labeled`` (:meth:`step` has taken the duplicates out).
        Returns the drift detections the batch fired: the caller acts on them once the batch's
        offsets are booked, so a snapshot version covers exactly the ids it lists."""
        m = self.metrics
        batch: list[Example] = []
        trained_ids: list[str] = []
        held_ids: list[str] = []
        for ev in labeled:
            ex = Example(ev.text, ev.label, self._domains.fold(ev.domain), ev.id)
            if self.holdout.take(ex):
                held_ids.append(ev.id)
            else:
                batch.append(ex)
                trained_ids.append(ev.id)
        if batch:
            started = time.perf_counter()
            preds = self.learner.learn(batch)
            m.train_seconds.inc(time.perf_counter() - started)
        if held_ids:  # counted once training succeeded (a failed batch is read again)
            m.held_out.inc(len(held_ids))
        self.versions.consumed("held_out", held_ids)
        self.versions.consumed("trained", trained_ids)
        if not batch:
            return []
        for ex, pred in zip(batch, preds):
            self.prequential.add(pred == ex.label, ex.domain)
        fired = self.drift.observe(pred != ex.label for ex, pred in zip(batch, preds))
        n = len(batch)
        self.trained_total += n
        m.trained.inc(n)
        m.labels_known.set(len(self.model.labels))
        value = self.prequential.value
        if value is not None:
            m.prequential.set(value)
        for domain, acc in self.prequential.per_domain().items():
            m.prequential_domain.labels(domain).set(acc)
        self.drift.after_examples(n)  # examples before a detection do not count toward its adaptation
        return fired

    def _adapt(self, fired: list[Detection]) -> None:
        """Report and act on the learner's own drift detections (a snapshot version first)."""
        for d in fired:
            report_detection(d, self.metrics, self._producer, self.topics.drift, "learner", self.settings.model_name)
            self.drift.act_on(d)

    # versions ---------------------------------------------------------------------------------
    def write_version(self, note: str | None = None) -> VersionMeta:
        """Durable version first, then its ModelEvent, then the offset commit (only while this
        learner holds the lease)."""
        self._renew_lease(now=True)
        meta = self.versions.write(self.parent, self._offsets, self.trained_total, note)
        failpoint("learner.after_registry_write")
        self._announce(meta)
        self._producer.flush()
        failpoint("learner.after_model_event")
        self._consumer.commit(self._offsets)
        self.metrics.versions_written.inc()
        self.parent = meta.version
        self.versions.committed(meta)
        log.info("wrote version %d (%d examples trained)", meta.version, self.trained_total)
        return meta

    def _announce(self, meta: VersionMeta) -> None:
        """Publish the ModelEvent of a new candidate version (acknowledged at the next flush)."""
        event = ModelEvent(
            model=self.settings.model_name,
            version=meta.version,
            status="candidate",
            parent=meta.parent,
            metrics=meta.metrics.to_json(),
            uri=meta.uri,
        )
        self._producer.publish(self.topics.models, event, key=self.settings.model_name)

    def forget(self, ids: list[str]) -> dict[str, Any]:
        """Erase ``ids`` at the next step (thread-safe: the actor's call waits for it)."""
        return self.erasures.submit(ids)

    def erase(self, ids: list[str]) -> dict[str, Any]:
        """Take the texts of ``ids`` (found in the live state and the retained versions) out of
        the buffers and held-out samples, remember the ids as erased (never trained again), write
        a version without them (its lineage lists them as ``erased``), then drop them from the
        older retained versions (learners/erasure.py)."""
        texts = forget_state(self.learner, self.holdout, ids, retained_texts(self.registry, ids))
        self.versions.seen.erase(ids)
        self.versions.lineage.setdefault(ERASED, []).extend(ids)
        meta = self.write_version(note=f"erasure of {len(ids)} ids")
        dropped = erase_retained(self.registry, texts, skip=meta.version, ids=ids)
        log.warning("erased %d ids (%d texts found) in version %d", len(ids), len(texts), meta.version)
        return {"version": meta.version, "texts_found": len(texts), "dropped": dropped}

    def _snapshot(self, note: str) -> bool:
        """Write a version now when anything was trained since the last one (drift's snapshot)."""
        if self.versions.since == 0:
            return False
        self.write_version(note=note)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "version": self.parent,
            "examples_trained": self.trained_total,
            "prequential_accuracy": self.prequential.value,
            "labels": list(self.model.labels),
            "offsets": dict(self._offsets),
        }

    def close(self) -> None:
        try:
            self._consumer.close()
            self.drift.close()
        finally:
            self._producer.close()
            try:
                self.registry.release_lease(self.lease)
            except RegistryError as exc:  # it expires by itself
                log.warning("the learner's lease was not released: %s", exc)


__all__ = ["LearnerService"]
