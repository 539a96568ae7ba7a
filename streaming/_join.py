"""The join state: pending texts, feedback and predictions by ``id``, bounded in time and count.

Pure (no Kafka): :class:`JoinState` pairs either arrival order into LabeledExamples, pairs served
predictions with feedback for the live accuracy, and turns feedback that never met its text
into dead letters. The first of an id wins: a second text or feedback for an id that is pending,
or that was joined among the last :data:`JOINED_IDS`, is dropped and counted (``duplicates``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.accuracy import RollingAccuracy
from streaming.events import DeadLetter, FeedbackEvent, LabeledExample, PredictionEvent, TextEvent
from streaming.files import write_json_atomic

#: Ids joined recently (kept in the checkpoint), whose text or feedback coming again is dropped.
JOINED_IDS = 100_000
DUPLICATE_KINDS = ("text", "feedback")


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
        self._joined: OrderedDict[str, None] = OrderedDict()  # the newest JOINED_IDS ids joined
        #: Texts and feedback dropped as repeats of an id pending or joined (running totals).
        self.duplicates = dict.fromkeys(DUPLICATE_KINDS, 0)
        self.live = RollingAccuracy()
        self._evicted = Expired()

    def __len__(self) -> int:
        return len(self._texts) + len(self._feedback)

    def pending(self) -> dict[str, int]:
        return {"text": len(self._texts), "feedback": len(self._feedback), "prediction": len(self._predictions)}

    def _repeated(self, kind: str, id_: str, pending: OrderedDict[str, _Pending]) -> bool:
        """True (counted) when ``id_`` is pending in ``pending`` or was joined recently."""
        if id_ in pending or id_ in self._joined:
            self.duplicates[kind] += 1
            return True
        return False

    def add_text(self, ev: TextEvent, now: float) -> LabeledExample | None:
        if self._repeated("text", ev.id, self._texts):
            return None
        fb = self._feedback.pop(ev.id, None)
        if fb is not None:
            return self._pair(ev.id, ev.text, ev.domain, fb.data["label"], ev.ts)
        self._texts[ev.id] = _Pending(now, {"text": ev.text, "domain": ev.domain, "ts": ev.ts})
        self._bound()
        return None

    def add_feedback(self, ev: FeedbackEvent, now: float, where: tuple[str, int, int]) -> LabeledExample | None:
        if self._repeated("feedback", ev.id, self._feedback):  # the first label wins
            return None
        text = self._texts.pop(ev.id, None)
        if text is not None:
            d = text.data
            return self._pair(ev.id, d["text"], d["domain"], ev.label, d["ts"])
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

    def _pair(self, id_: str, text: str, domain: str | None, label: str, ts: float) -> LabeledExample:
        self._joined[id_] = None
        if len(self._joined) > JOINED_IDS:
            self._joined.popitem(last=False)
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

    def forget(self, ids: Iterable[str]) -> int:
        """Drop the pending texts, feedback and predictions of ``ids`` (erasure by id); returns
        how many entries went. Joined ids stay known, so a text read again is not joined again."""
        gone = 0
        for id_ in set(ids):
            for pending in (self._texts, self._feedback, self._predictions):
                gone += pending.pop(id_, None) is not None
            self._recent.pop(id_, None)
        return gone

    @staticmethod
    def forget_json(state: dict[str, Any], ids: Iterable[str]) -> dict[str, Any]:
        """A saved pending state (:meth:`to_json`) without the entries of ``ids``."""
        wanted = set(ids)
        kinds = ("texts", "feedback", "predictions")
        return {k: [e for e in v if e[0] not in wanted] if k in kinds else v for k, v in state.items()}

    def to_json(self) -> dict[str, Any]:
        def dump(d: OrderedDict[str, _Pending]) -> list[list[Any]]:
            return [[k, p.arrival, p.data, list(p.where)] for k, p in d.items()]

        return {
            "texts": dump(self._texts),
            "feedback": dump(self._feedback),
            "predictions": dump(self._predictions),
            "joined": list(self._joined),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Back to a checkpoint's pending state (from :meth:`to_json`): what was joined, evicted
        or expired since is pending again, to be read and joined again (no longer a repeat). The
        live accuracy and the duplicate counts stay."""
        self.load_json(state)
        self._evicted = Expired()

    def load_json(self, state: dict[str, Any]) -> None:
        for name, target in (("texts", self._texts), ("feedback", self._feedback), ("predictions", self._predictions)):
            target.clear()
            for k, arrival, data, where in state.get(name, []):
                target[k] = _Pending(arrival, data, tuple(where))  # type: ignore[arg-type]
        self._joined = OrderedDict.fromkeys(state.get("joined", [])[-JOINED_IDS:])


Durable = tuple[dict[str, int], dict[str, Any]]


def forget_durable(path: Path, durable: Durable, ids: Iterable[str]) -> Durable:
    """A joiner's last checkpoint (offsets, saved state) without the entries of ``ids``; the
    file at ``path``, when there is one, is rewritten so (same offsets: nothing is read again)."""
    offsets, state = durable
    state = JoinState.forget_json(state, ids)
    if path.exists():
        write_json_atomic(path, {"offsets": offsets, "state": state})
    return dict(offsets), state
