from streaming._join import JoinState
from streaming.events import FeedbackEvent, PredictionEvent, TextEvent

WHERE = ("fb", 0, 1)


def test_text_then_feedback_joins():
    s = JoinState(ttl_s=10, max_pending=100)
    assert s.add_text(TextEvent(id="a", text="hello", domain="d", ts=1.0), now=0) is None
    out = s.add_feedback(FeedbackEvent(id="a", label="pos"), now=1, where=WHERE)
    assert out is not None
    assert (out.id, out.text, out.label, out.domain, out.ts) == ("a", "hello", "pos", "d", 1.0)
    assert len(s) == 0


def test_feedback_then_text_joins():
    s = JoinState(ttl_s=10, max_pending=100)
    assert s.add_feedback(FeedbackEvent(id="a", label="neg"), now=0, where=WHERE) is None
    out = s.add_text(TextEvent(id="a", text="hello"), now=2)
    assert out is not None and out.label == "neg"


def test_unlabeled_text_expires_quietly_and_feedback_goes_to_dlq():
    s = JoinState(ttl_s=10, max_pending=100)
    s.add_text(TextEvent(id="t", text="x"), now=0)
    s.add_feedback(FeedbackEvent(id="f", label="y"), now=0, where=("fb", 2, 7))
    assert s.expire(now=5).texts == 0
    gone = s.expire(now=11)
    assert gone.texts == 1
    assert len(gone.feedback) == 1
    dead = gone.feedback[0]
    assert (dead.reason, dead.source_topic, dead.partition, dead.offset) == ("unjoined_feedback", "fb", 2, 7)
    assert "f" in dead.error
    assert len(s) == 0


def test_bound_evicts_oldest():
    s = JoinState(ttl_s=100, max_pending=3)
    s.add_feedback(FeedbackEvent(id="f0", label="y"), now=0, where=WHERE)
    for i in range(3):
        s.add_text(TextEvent(id=f"t{i}", text="x"), now=1 + i)
    assert len(s) == 3
    gone = s.expire(now=5)
    assert [d.reason for d in gone.feedback] == ["unjoined_feedback"]
    s.add_text(TextEvent(id="t9", text="x"), now=6)
    assert s.expire(now=6).texts == 1  # t0 evicted
    assert s.add_feedback(FeedbackEvent(id="t1", label="y"), now=7, where=WHERE) is not None


def test_state_round_trip():
    s = JoinState(ttl_s=10, max_pending=100)
    s.add_text(TextEvent(id="a", text="hello", domain="d"), now=0)
    s.add_feedback(FeedbackEvent(id="b", label="x"), now=0, where=WHERE)
    t = JoinState(ttl_s=10, max_pending=100)
    t.load_json(s.to_json())
    assert t.pending() == s.pending()
    assert t.add_feedback(FeedbackEvent(id="a", label="y"), now=1, where=WHERE).text == "hello"
    assert t.add_text(TextEvent(id="b", text="bee"), now=1).label == "x"


def test_live_accuracy_from_predictions_either_order():
    s = JoinState(ttl_s=10, max_pending=100)
    s.add_prediction(PredictionEvent(id="a", label="pos", scores={}, model_version=1), now=0)
    s.add_text(TextEvent(id="a", text="x", domain="d1"), now=0)
    s.add_feedback(FeedbackEvent(id="a", label="pos"), now=1, where=WHERE)
    s.add_text(TextEvent(id="b", text="x", domain="d2"), now=0)
    s.add_feedback(FeedbackEvent(id="b", label="neg"), now=1, where=WHERE)
    s.add_prediction(PredictionEvent(id="b", label="pos", scores={}, model_version=1), now=2)
    assert s.live.value == 0.5
    assert s.live.per_domain() == {"d1": 1.0, "d2": 0.0}


def test_restore_puts_back_what_was_joined_and_evicted_since_the_snapshot():
    s = JoinState(ttl_s=10, max_pending=2)
    s.add_text(TextEvent(id="a", text="hello"), now=0)
    snapshot = s.to_json()
    assert s.add_feedback(FeedbackEvent(id="a", label="pos"), now=1, where=WHERE) is not None
    for i in range(3):  # one evicted since the snapshot
        s.add_text(TextEvent(id=f"t{i}", text="x"), now=2 + i)
    s.restore(snapshot)
    assert s.pending()["text"] == 1 and s.expire(now=3).texts == 0  # the eviction is forgotten
    joined = s.add_feedback(FeedbackEvent(id="a", label="pos"), now=4, where=WHERE)
    assert joined is not None and joined.text == "hello"  # joined again
