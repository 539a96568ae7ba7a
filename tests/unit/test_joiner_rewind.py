"""The joiner's rewind, over a fake consumer and producer: a step whose sends failed goes back
to the last checkpoint, and every pair it lost is produced again by the next steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

import streaming.joiner as joiner_module
from streaming.events import FeedbackEvent, LabeledExample, Record, TextEvent
from streaming.joiner import JoinerMetrics, JoinerService
from streaming.kafka import SendFailed
from streaming.settings import StreamSettings


class FakeConsumer:
    """One partition per topic; ``poll`` returns what lies at the positions."""

    logs: ClassVar[dict[str, list[Record]]] = {}

    def __init__(self, settings: StreamSettings, group_id: str | None, client_id: str = "") -> None:
        self.positions: dict[str, int] = {}
        self.committed_offsets: dict[str, int] = {}

    def partitions(self, topic: str) -> list[int]:
        return [0]

    def committed(self, keys: Any) -> dict[str, int]:
        return {}

    def assign(self, topics: list[str], offsets: dict[str, int], shard: tuple[int, int] = (0, 1)) -> dict[str, int]:
        self.positions = {f"{t}:0": offsets.get(f"{t}:0", 0) for t in topics}
        return dict(self.positions)

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        out = []
        for key, at in self.positions.items():
            records = self.logs.get(key.rsplit(":", 1)[0], [])[at:]
            out += records
            self.positions[key] = at + len(records)
        return out

    def seek(self, offsets: dict[str, int]) -> None:
        self.positions.update(offsets)

    def commit(self, offsets: dict[str, int]) -> None:
        self.committed_offsets = dict(offsets)

    def close(self) -> None:
        pass


class FakeProducer:
    """Keeps what was acknowledged; sends fail while ``broker_away``."""

    broker_away = False
    acknowledged: ClassVar[list[LabeledExample]] = []

    def __init__(self, settings: StreamSettings, client_id: str = "", metrics: Any = None, **overrides: Any):
        self._failed = 0

    def publish(self, topic: str, event: Any, key: str | None = None) -> None:
        if self.broker_away:
            self._failed += 1
        else:
            self.acknowledged.append(event)

    def flush(self, timeout_s: float | None = None) -> None:
        failed, self._failed = self._failed, 0
        if failed:
            raise SendFailed({"labeled": failed}, "KafkaTimeoutError")

    def close(self) -> None:
        pass


def record(topic: str, offset: int, event: Any) -> Record:
    return Record(topic, 0, offset, event.id.encode(), event.to_bytes())


@pytest.fixture
def joiner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JoinerService:
    monkeypatch.setattr(joiner_module, "Consumer", FakeConsumer)
    monkeypatch.setattr(joiner_module, "Producer", FakeProducer)
    monkeypatch.setattr(FakeProducer, "acknowledged", [])
    monkeypatch.setattr(FakeProducer, "broker_away", False)
    settings = StreamSettings(state_dir=tmp_path, join_producer_process=False, join_checkpoint_s=1e-9)
    t = settings.topics
    texts = [record(t.texts, i, TextEvent(id=f"id{i}", text=f"text {i}")) for i in range(10)]
    feedback = [record(t.feedback, i, FeedbackEvent(id=f"id{i}", label="pos")) for i in range(10)]
    monkeypatch.setattr(FakeConsumer, "logs", {t.texts: texts, t.feedback: feedback[:5]})
    return JoinerService(settings, JoinerMetrics(CollectorRegistry()))


def test_a_step_whose_sends_failed_rewinds_and_the_pairs_are_produced_again(joiner: JoinerService) -> None:
    joiner.step()  # five pairs joined and acknowledged, five texts pending: checkpointed
    assert [e.id for e in FakeProducer.acknowledged] == [f"id{i}" for i in range(5)]
    durable = dict(joiner._consumer.committed_offsets)
    t = joiner.topics
    FakeConsumer.logs[t.feedback] = [record(t.feedback, i, FeedbackEvent(id=f"id{i}", label="pos")) for i in range(10)]
    FakeProducer.broker_away = True
    with pytest.raises(SendFailed):
        joiner.step()  # the five new pairs are joined, their sends fail, the checkpoint fails
    assert joiner._consumer.committed_offsets == durable  # nothing committed past them
    assert joiner.state.pending()["text"] == 5  # back at the checkpoint
    assert joiner._consumer.positions == durable
    with pytest.raises(SendFailed):
        joiner.step()  # still away: read, joined and failed again
    FakeProducer.broker_away = False
    joiner.step()
    assert sorted(e.id for e in FakeProducer.acknowledged) == sorted(f"id{i}" for i in range(10))
    assert joiner.state.pending()["text"] == 0
    assert joiner._consumer.committed_offsets == {f"{t.texts}:0": 10, f"{t.feedback}:0": 10, f"{t.predictions}:0": 0}


def test_producer_overrides_need_the_in_process_producer(tmp_path: Path) -> None:
    settings = StreamSettings(state_dir=tmp_path, join_producer_process=True)
    with pytest.raises(ValueError, match="join_producer_process=False"):
        JoinerService(settings, JoinerMetrics(CollectorRegistry()), producer_overrides={"delivery_timeout_ms": 1})


def test_a_restarted_joiner_drops_repeats_of_ids_joined_before_its_checkpoint(
    joiner: JoinerService, tmp_path: Path
) -> None:
    from streaming.metrics import sample_value

    joiner.step()  # id0..id4 joined and checkpointed
    joiner.close()
    t = joiner.topics
    repeats = [record(t.feedback, 5 + i, FeedbackEvent(id=f"id{i}", label="neg")) for i in range(2)]
    FakeConsumer.logs[t.feedback] = FakeConsumer.logs[t.feedback][:5] + repeats
    metrics = JoinerMetrics(CollectorRegistry())
    again = JoinerService(joiner.settings, metrics)
    again.step()
    assert sorted(e.id for e in FakeProducer.acknowledged) == [f"id{i}" for i in range(5)]  # no second pair
    assert sample_value(metrics.exposition(), "streamcl_joiner_duplicates_total", {"kind": "feedback"}) == 2
    assert sample_value(metrics.exposition(), "streamcl_joiner_duplicates_total", {"kind": "text"}) == 0
    assert again.state.pending()["feedback"] == 0  # nothing left to dead-letter later
