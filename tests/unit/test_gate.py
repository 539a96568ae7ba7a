"""The promotion gate's decision, the serving pointer's history and pin, and the controller's
operator calls, over a local registry (no broker: the controller's Kafka parts are stubbed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from learners.evaluation import Holdout
from learners.model import Prediction
from learners.registry import LocalRegistry, NewVersion, ServingState
from services.controller import ModelController
from services.gate import PromoteNewer, ScoreGate
from services.metrics import ControllerMetrics


class Fake:
    """A "model" that answers from a table (unknown texts: "neutral")."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def predict(self, texts):
        return [Prediction(self.answers.get(t, "neutral"), {}) for t in texts]


def _registry(tmp_path: Path, rows: list[tuple[str, str, str]]) -> LocalRegistry:
    reg = LocalRegistry(tmp_path)
    holdout = Holdout(every=1, per_domain=1000)
    for text, label, domain in rows:
        holdout.take(SimpleNamespace(text=text, label=label, domain=domain))
    for _ in range(2):
        reg.create(lambda folder: holdout.save(folder), NewVersion(status="candidate"))
    reg.set_serving(1)
    return reg


class TableGate(ScoreGate):
    def __init__(self, registry, models, **kw):
        super().__init__(registry, **kw)
        self.models = models

    def _model(self, version):
        return self.models[version]


ROWS = [(f"a{i}", "positive", "airlines") for i in range(40)] + [(f"p{i}", "negative", "apple") for i in range(40)]


def test_gate_rejects_a_candidate_worse_on_one_domain_and_passes_a_better_one(tmp_path):
    reg = _registry(tmp_path, ROWS)
    truth = {t: y for t, y, _ in ROWS}
    serving = Fake({t: y for t, y, d in ROWS if d == "airlines" or t < "p3"})  # apple mostly wrong
    forgets = Fake({t: y for t, y, d in ROWS if d == "apple"})  # better overall, forgot airlines
    better = Fake(truth)
    gate = TableGate(reg, {1: serving, 2: forgets}, max_drop=0.02, max_domain_drop=0.1)
    decision = gate.decide(reg.meta(2), reg.meta(1))
    assert not decision.ok and "domain 'airlines'" in decision.reason
    assert decision.figures["gate_groups"]["airlines"] == {"n": 40, "candidate": 0.0, "serving": 1.0}
    # a version's weights never change: the gate remembers its answers, so a new gate scores the other model
    gate = TableGate(reg, {1: serving, 2: better}, max_drop=0.02, max_domain_drop=0.1)
    decision = gate.decide(reg.meta(2), reg.meta(1))
    assert decision.ok and decision.figures["gate_accuracy"] == 1.0
    assert not gate.decide(reg.meta(1), reg.meta(2)).ok  # not newer


def test_small_groups_are_judged_only_overall(tmp_path):
    rows = [*ROWS, *[(f"n{i}", "neutral", "claritin") for i in range(5)]]
    reg = _registry(tmp_path, rows)
    truth = {t: y for t, y, _ in rows}
    drops_claritin = {t: ("positive" if t.startswith("n") else y) for t, y in truth.items()}
    gate = TableGate(reg, {1: Fake(truth), 2: Fake(drops_claritin)}, max_drop=0.1, min_domain_examples=20)
    assert gate.decide(reg.meta(2), reg.meta(1)).ok


def test_serving_history_pin_and_floor(tmp_path):
    reg = LocalRegistry(tmp_path)
    for _ in range(3):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion())
    assert reg.serving_state() == ServingState(version=None, pinned=False, history=[], floor=0)
    reg.set_serving(1)
    reg.set_serving(2)
    state = reg.set_serving(3, pinned=True, floor=3)
    assert state.history == [1, 2] and state.pinned and state.floor == 3
    assert reg.set_serving(1).history == [2, 3]  # a version serving again leaves the history
    assert reg.set_pinned(False).pinned is False
    assert LocalRegistry(tmp_path).serving_state().floor == 3


class Quiet(ModelController):
    """The controller without Kafka: announcements are recorded."""

    def __init__(self, registry, gate):
        self.registry, self.gate, self.model, self.decided = registry, gate, "default", 0
        self.metrics = ControllerMetrics(CollectorRegistry())
        self.announced: list[tuple[int, str]] = []
        import threading

        self._lock = threading.RLock()

    def _announce(self, version, status, extra):
        self.announced.append((version, status))


def test_operator_calls_and_the_gate_do_not_undo_each_other(tmp_path):
    reg = LocalRegistry(tmp_path)
    for status in ("promoted", "candidate", "candidate"):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status=status))
    reg.set_serving(1)
    c = Quiet(reg, PromoteNewer())
    assert c.admin("pin")["pinned"] is True
    c.consider(3)
    assert reg.serving() == 1 and reg.meta(3).status == "candidate"  # pinned: it waits
    c.admin("unpin")
    c.consider(3)
    assert reg.serving() == 3
    out = c.admin("rollback")
    assert out["serving"] == 1 and reg.meta(3).status == "rolled_back"
    c.consider(2)  # older than the operator's decision: not promoted automatically
    assert reg.serving() == 1
    assert c.admin("promote", 2)["serving"] == 2
    assert c.admin("promote", 9)["status"] == 404
    assert c.admin("rollback", 2)["error"] == "already_serving"
    (tmp_path / "versions" / "000003" / "w").write_bytes(b"tampered")
    assert c.admin("promote", 3)["status"] == 409 and reg.serving() == 2
    assert c.admin("explode")["status"] == 400
    assert (3, "rolled_back") in c.announced and (2, "promoted") in c.announced


def test_a_drop_within_chance_on_a_small_gate_set_still_promotes(tmp_path):
    rows = [(f"t{i}", "positive", "d") for i in range(12)]
    reg = _registry(tmp_path, rows)
    truth = {t: y for t, y, _ in rows}
    one_worse = {**truth, "t0": "negative"}  # 1 of 12: an 8-point drop, but one example
    gate = TableGate(reg, {1: Fake(truth), 2: Fake(one_worse)}, max_drop=0.02)
    assert gate.decide(reg.meta(2), reg.meta(1)).ok
    gate = TableGate(reg, {1: Fake(truth), 2: Fake({t: "negative" for t in truth})}, max_drop=0.02)  # 12 of 12 lost
    decision = gate.decide(reg.meta(2), reg.meta(1))
    assert not decision.ok and "lost 12, won 0" in decision.reason


def test_models_stay_in_memory_and_a_version_is_scored_once_per_text(tmp_path, monkeypatch):
    """The serving version and the candidate just scored are kept: a promoted candidate is the
    next decision's serving version, loaded no second time; each version scores a text once."""
    reg = _registry(tmp_path, ROWS)
    holdout = Holdout(every=1, per_domain=1000)
    for text, label, domain in ROWS:
        holdout.take(SimpleNamespace(text=text, label=label, domain=domain))
    reg.create(lambda folder: holdout.save(folder), NewVersion(status="candidate"))
    truth = {t: y for t, y, _ in ROWS}
    loads: list[int] = []
    scored: list[str] = []

    class Counting(Fake):
        def predict(self, texts):
            scored.extend(texts)
            return super().predict(texts)

    def load_model(version):
        loads.append(version)
        return Counting(truth)

    monkeypatch.setattr(reg, "load_model", load_model)
    gate = ScoreGate(reg)
    assert gate.decide(reg.meta(2), reg.meta(1)).ok
    assert gate.decide(reg.meta(3), reg.meta(2)).ok  # 2 was promoted: still in memory
    assert loads == [2, 1, 3]
    assert len(scored) == 3 * len(ROWS)  # every version scored each gate text once
