"""Shadow mode: a candidate scores sampled live traffic (texts, the serving version's logged
predictions, feedback) before the gate decides it; the controller hands the figures on."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from learners.model import Prediction
from learners.registry import LocalRegistry, NewVersion
from services.controller import ModelController
from services.gate import PromoteNewer
from services.metrics import ControllerMetrics
from services.shadow import Shadow, sampled
from streaming.errors import RegistryError
from streaming.events import FeedbackEvent, PredictionEvent, Record, TextEvent
from streaming.settings import StreamSettings

STREAM = StreamSettings()
T = STREAM.topics


class Fake:
    def __init__(self, answer):
        self.answer = answer

    def predict(self, texts):
        return [Prediction(self.answer(t), {}) for t in texts]


class Queue:
    """A consumer stub: poll returns what was put since the last poll."""

    def __init__(self):
        self.records: list[Record] = []
        self.closed = False

    def poll(self, timeout_s=0.1, max_records=None):
        out, self.records = self.records, []
        return out

    def close(self):
        self.closed = True


def record(topic, event, offset=0):
    return Record(topic, 0, offset, event.id.encode(), event.to_bytes())


def traffic(n, serving_label, truth, serving_version=1):
    """``n`` texts "t<i>", the serving version's prediction for each, and feedback for the even ones."""
    out = []
    for i in range(n):
        id_ = f"id{i}"
        out.append(record(T.texts, TextEvent(id=id_, text=f"t{i}")))
        out.append(
            record(
                T.predictions, PredictionEvent(id=id_, label=serving_label(i), scores={}, model_version=serving_version)
            )
        )
        if i % 2 == 0:
            out.append(record(T.feedback, FeedbackEvent(id=id_, label=truth(i))))
    return out


def test_sampling_is_by_id_and_keeps_about_the_share():
    ids = [f"id-{i}" for i in range(20_000)]
    share = sum(sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert all(sampled(i, 0.1) == sampled(i.encode(), 0.1) for i in ids[:100])
    assert not sampled(None, 1.0) and all(sampled(i, 1.0) for i in ids[:100])


def test_shadow_figures_agreement_and_accuracy_on_the_labeled_texts():
    metrics = ControllerMetrics(CollectorRegistry())
    candidate = Fake(lambda t: "pos")  # always "pos"
    shadow = Shadow(STREAM, lambda v: candidate, metrics, texts=1000, share=1.0)
    shadow.feed(traffic(10, lambda i: "pos", lambda i: "neg"))  # ignored: nothing shadowed yet
    shadow.start(2)
    # serving says "pos" on 0-4 and "neg" on 5-9; the truth is "pos" below 3, else "neg"
    shadow.feed(traffic(10, lambda i: "pos" if i < 5 else "neg", lambda i: "pos" if i < 3 else "neg"))
    f = shadow.figures()
    assert f["shadow_texts"] == 10 and f["shadow_compared"] == 10 and f["shadow_agreement"] == 0.5
    # labeled: 0, 2, 4, 6, 8 -> truth pos, pos, neg, neg, neg; candidate pos x5; serving pos, pos, pos, neg, neg
    assert f["shadow_labeled"] == 5 and f["shadow_accuracy"] == 0.4 and f["shadow_serving_accuracy"] == 0.8
    assert metrics.shadow_agreement._value.get() == 0.5
    assert metrics.shadow_accuracy.labels("candidate")._value.get() == 0.4
    assert metrics.shadow_version._value.get() == 2
    assert not shadow.done()
    assert shadow.stop()["shadow_version"] == 2 and metrics.shadow_version._value.get() == 0


def test_shadow_ends_after_its_texts_or_its_time_and_skips_bad_records():
    now = [0.0]
    shadow = Shadow(STREAM, lambda v: Fake(lambda t: "a"), texts=4, share=1.0, max_s=60, clock=lambda: now[0])
    shadow.start(3)
    bad = [Record(T.texts, 0, 0, b"x", b"{not json"), Record(T.feedback, 0, 1, b"y", b'{"id": "y"}')]
    # predictions by the shadowed version itself (an operator promoted it meanwhile) are not "serving"
    own = record(T.predictions, PredictionEvent(id="id0", label="b", scores={}, model_version=3))
    shadow.feed([*bad, own, *traffic(3, lambda i: "a", lambda i: "a")])
    assert shadow.scored == 3 and not shadow.done()
    shadow.feed(traffic(6, lambda i: "a", lambda i: "a"))  # ids 0-2 again: not scored twice
    assert shadow.scored == 6 and shadow.done()  # a batch is scored whole, then no more
    assert shadow.figures()["shadow_agreement"] == 1.0
    shadow.stop()
    shadow.start(4)
    now[0] += 61
    assert shadow.done() and shadow.figures()["shadow_texts"] == 0


def test_a_candidate_that_cannot_load_or_predict_ends_its_shadow_with_the_error():
    def missing(version):
        raise RegistryError(f"version {version} has no files")

    shadow = Shadow(STREAM, missing, share=1.0)
    shadow.start(5)
    assert shadow.done() and "no files" in shadow.figures()["shadow_error"]

    class Broken:
        def predict(self, texts):
            raise RuntimeError("boom")

    def corrupt(version):
        raise ValueError("header too large")

    shadow = Shadow(STREAM, corrupt, share=1.0)
    shadow.start(7)
    assert shadow.done() and shadow.figures()["shadow_error"] == "ValueError: header too large"

    shadow = Shadow(STREAM, lambda v: Broken(), share=1.0)
    shadow.start(6)
    shadow.feed(traffic(2, lambda i: "a", lambda i: "a"))
    assert shadow.done() and "boom" in shadow.figures()["shadow_error"]


class Quiet(ModelController):
    """The controller without Kafka (its shadow reads a stub); announcements are recorded."""

    def __init__(self, registry, shadow):
        self.registry, self.gate, self.model, self.decided = registry, PromoteNewer(), "default", 0
        self.shadow, self._waiting = shadow, None
        self.metrics = ControllerMetrics(CollectorRegistry())
        self.announced: list[tuple[int, str, dict]] = []
        self._lock = threading.RLock()

    def _announce(self, version, status, extra):
        self.announced.append((version, status, extra))


def test_the_controller_shadows_a_candidate_then_the_gate_decides_with_its_figures(tmp_path):
    reg = LocalRegistry(tmp_path)
    for status in ("promoted", "candidate", "candidate"):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status=status))
    reg.set_serving(1)
    source = Queue()
    shadow = Shadow(STREAM, lambda v: Fake(lambda t: "pos"), texts=4, share=1.0, consumer=source)
    c = Quiet(reg, shadow)
    c._queue(2)
    c._shadow_step()
    assert shadow.version == 2 and reg.serving() == 1  # shadowing: not decided yet
    c._queue(3)  # arrives during the shadow of 2: waits for it
    source.records = traffic(2, lambda i: "pos", lambda i: "pos")
    c._shadow_step()
    assert shadow.version == 2 and reg.serving() == 1
    source.records = traffic(4, lambda i: "neg", lambda i: "neg")[5:]  # ids 2 and 3
    c._shadow_step()  # 4 texts scored: the gate decides 2 with the shadow's figures
    assert reg.serving() == 2
    gate = reg.meta(2).gate
    assert gate is not None
    assert gate.shadow_texts == 4 and gate.shadow_agreement == 0.5 and gate.shadow_accuracy == 0.5
    assert c.announced[-1][:2] == (2, "promoted") and c.announced[-1][2]["shadow_agreement"] == 0.5
    c._shadow_step()  # the waiting candidate is shadowed next
    assert shadow.version == 3
    c.admin("promote", 3)  # an operator promotes it during its shadow
    source.records = traffic(8, lambda i: "pos", lambda i: "pos")
    c._shadow_step()
    assert reg.serving() == 3 and reg.meta(3).status == "promoted" and not shadow.active
    shadow.close()
    assert source.closed
