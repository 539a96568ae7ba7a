"""The promotion gate: whether a candidate version may replace the serving one.

:class:`PromoteNewer` promotes every newer candidate; :class:`ScoreGate` scores the candidate
and the serving version on the candidate's held-out gate set and refuses a regression beyond
chance. A gate is one small interface (:class:`Gate`); the controller asks it about each
candidate and stores the decision's figures with the version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from learners.evaluation import gate_rows
from learners.registry import Registry, VersionMeta

__all__ = ["Decision", "Gate", "PromoteNewer", "ScoreGate"]


@dataclass(frozen=True)
class Decision:
    """A gate's answer: whether to promote, why, and the figures it measured (stored as the
    version's ``gate``; the flat ones also go into its ModelEvent)."""

    ok: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


class Gate(Protocol):
    """Decides whether a candidate may replace the serving version."""

    def decide(self, candidate: VersionMeta, serving: VersionMeta | None) -> Decision: ...


class PromoteNewer:
    """Promotes every candidate newer than the serving version."""

    def decide(self, candidate: VersionMeta, serving: VersionMeta | None) -> Decision:
        if serving is not None and candidate.version <= serving.version:
            return Decision(False, f"not newer than serving version {serving.version}")
        return Decision(True, "newer than the serving version")


class ScoreGate:
    """Scores the candidate and the serving version on the candidate's gate set: the
    held-out examples of its lineage (every domain's retained sample and the most recent
    held-out window), which neither model trained on.

    The candidate is refused when it is worse than the serving version by more than
    ``max_drop`` overall, or by more than ``max_domain_drop`` on a group with at least
    ``min_domain_examples`` examples, *and* the drop is beyond chance: with ``lost`` the
    examples only the serving version gets right and ``won`` those only the candidate gets
    right (a paired, McNemar-style sign test), ``lost - won > z * sqrt(lost + won)``. On a
    small gate set one example is a large fraction; the test keeps noise from blocking
    every candidate while a real regression is still refused."""

    def __init__(
        self,
        registry: Registry,
        max_drop: float = 0.02,
        max_domain_drop: float = 0.1,
        min_domain_examples: int = 20,
        z: float = 1.64,
        batch: int = 64,
        served: Callable[[Any], Any] | None = None,
    ) -> None:
        """``served``: the copy of a loaded model that replicas serve (an int8 copy, say): the
        gate judges what is served."""
        self.registry = registry
        self.max_drop = max_drop
        self.max_domain_drop = max_domain_drop
        self.min_domain_examples = min_domain_examples
        self.z = z
        self.batch = batch
        self.served = served or (lambda model: model)
        # the serving version and the last candidate scored stay in memory (a promoted candidate
        # is the next one's serving version), and the frozen layers' outputs of the gate set are
        # computed once (learners.frozen): a candidate costs the load of its small part and its
        # trained layers
        self._models: dict[int, Any] = {}
        self._answers: dict[int, dict[str, str | None]] = {}  # each kept version's answers per text
        self._frozen: Any = None

    def _model(self, version: int) -> Any:
        if version not in self._models:
            self._models[version] = self.served(self.registry.load_model(version))
        return self._models[version]

    def _predict(self, version: int, texts: list[str]) -> list[str | None]:
        """``version``'s answers for ``texts`` (each text scored once per version)."""
        if self._frozen is None:
            from learners.frozen import FrozenCache  # torch only where a model is scored

            self._frozen = FrozenCache(batch=self.batch)
        known = self._answers.setdefault(version, {})
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, (p.label for p in self._frozen.predict(self._model(version), missing))))
        return [known[t] for t in texts]

    def _worse(self, cand: list[bool], base: list[bool], limit: float) -> tuple[bool, str]:
        """Is the candidate worse by more than ``limit`` and beyond chance? And the figures."""
        n = len(cand)
        acc_c, acc_s = sum(cand) / n, sum(base) / n
        lost = sum(b and not c for c, b in zip(cand, base))
        won = sum(c and not b for c, b in zip(cand, base))
        significant = lost - won > self.z * math.sqrt(lost + won)
        text = f"{acc_c:.3f} vs {acc_s:.3f} on {n} examples (lost {lost}, won {won})"
        return acc_c < acc_s - limit and significant, text

    def decide(self, candidate: VersionMeta, serving: VersionMeta | None) -> Decision:
        if serving is None:
            return Decision(True, "nothing is serving yet")
        if candidate.version <= serving.version:
            return Decision(False, f"not newer than serving version {serving.version}")
        rows = gate_rows(self.registry.local_path(candidate.version))
        if not rows:
            return Decision(True, "no held-out examples yet to score on: promoted as newer")
        texts = [t for t, _, _ in rows]
        cand_pred = self._predict(candidate.version, texts)
        base_pred = self._predict(serving.version, texts)
        kept = (serving.version, candidate.version)
        self._models = {v: m for v, m in self._models.items() if v in kept}
        self._answers = {v: a for v, a in self._answers.items() if v in kept}
        cand = [p == y for p, (_, y, _) in zip(cand_pred, rows)]
        base = [p == y for p, (_, y, _) in zip(base_pred, rows)]
        figures: dict[str, Any] = {
            "gate_examples": len(rows),
            "gate_accuracy": round(sum(cand) / len(rows), 4),
            "gate_serving_accuracy": round(sum(base) / len(rows), 4),
            "gate_serving_version": serving.version,
            "gate_groups": {},
        }
        problems = []
        worse, text = self._worse(cand, base, self.max_drop)
        if worse:
            problems.append(f"accuracy {text} against serving version {serving.version}")
        for g in sorted({g for _, _, g in rows}):
            idx = [i for i, (_, _, gg) in enumerate(rows) if gg == g]
            gc, gb = [cand[i] for i in idx], [base[i] for i in idx]
            figures["gate_groups"][g] = {
                "n": len(idx),
                "candidate": round(sum(gc) / len(idx), 4),
                "serving": round(sum(gb) / len(idx), 4),
            }
            if len(idx) >= self.min_domain_examples:
                worse, text = self._worse(gc, gb, self.max_domain_drop)
                if worse:
                    problems.append(f"domain {g!r}: {text}")
        if problems:
            limits = f"largest drops allowed {self.max_drop:g} overall, {self.max_domain_drop:g} per domain"
            return Decision(False, "; ".join(problems) + f" ({limits}, beyond chance)", figures)
        acc = f"accuracy {figures['gate_accuracy']:.3f} vs {figures['gate_serving_accuracy']:.3f}"
        return Decision(True, f"{acc} on {len(rows)} gate examples, no domain worse", figures)
