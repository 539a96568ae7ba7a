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


def test_the_first_label_of_a_pending_id_wins():
    s = JoinState(ttl_s=10, max_pending=100)
    assert s.add_feedback(FeedbackEvent(id="a", label="pos"), now=0, where=WHERE) is None
    assert s.add_feedback(FeedbackEvent(id="a", label="neg"), now=1, where=WHERE) is None
    out = s.add_text(TextEvent(id="a", text="hello"), now=2)
    assert out is not None and out.label == "pos"
    assert s.duplicates == {"text": 0, "feedback": 1}


def test_the_first_text_of_a_pending_id_wins():
    s = JoinState(ttl_s=10, max_pending=100)
    s.add_text(TextEvent(id="a", text="one"), now=0)
    s.add_text(TextEvent(id="a", text="two"), now=5)
    assert s.pending()["text"] == 1
    out = s.add_feedback(FeedbackEvent(id="a", label="pos"), now=6, where=WHERE)
    assert out is not None and out.text == "one"
    assert s.duplicates == {"text": 1, "feedback": 0}


def test_a_repeat_of_a_joined_id_is_dropped_and_counted_not_dead_lettered():
    s = JoinState(ttl_s=10, max_pending=100)
    s.add_text(TextEvent(id="a", text="hello"), now=0)
    assert s.add_feedback(FeedbackEvent(id="a", label="pos"), now=1, where=WHERE) is not None
    assert s.add_feedback(FeedbackEvent(id="a", label="neg"), now=2, where=WHERE) is None  # a client retry
    assert s.add_text(TextEvent(id="a", text="hello"), now=2) is None
    assert len(s) == 0
    gone = s.expire(now=100)
    assert gone.feedback == [] and gone.texts == 0
    assert s.duplicates == {"text": 1, "feedback": 1}


def test_joined_ids_are_in_the_checkpoint_and_bounded(monkeypatch):
    import streaming._join as join_module

    monkeypatch.setattr(join_module, "JOINED_IDS", 3)
    s = JoinState(ttl_s=10, max_pending=100)
    for i in range(5):
        s.add_text(TextEvent(id=f"t{i}", text="x"), now=0)
        s.add_feedback(FeedbackEvent(id=f"t{i}", label="y"), now=0, where=WHERE)
    saved = s.to_json()
    assert saved["joined"] == ["t2", "t3", "t4"]  # the newest, oldest first
    t = JoinState(ttl_s=10, max_pending=100)
    t.load_json(saved)
    assert t.add_feedback(FeedbackEvent(id="t4", label="z"), now=1, where=WHERE) is None
    assert t.duplicates["feedback"] == 1
    t.add_text(TextEvent(id="t0", text="again"), now=1)  # joined too long ago: a new pair
    assert t.add_feedback(FeedbackEvent(id="t0", label="y"), now=1, where=WHERE) is not None


def test_a_checkpoint_without_joined_ids_loads():
    s = JoinState(ttl_s=10, max_pending=100)
    s.load_json({"texts": [["a", 0.0, {"text": "x", "domain": None, "ts": 1.0}, ["", -1, -1]]]})
    assert s.add_feedback(FeedbackEvent(id="a", label="pos"), now=1, where=WHERE) is not None
