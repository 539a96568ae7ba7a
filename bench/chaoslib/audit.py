"""The auditor: every accepted feedback id against ``streamcl.labeled``, the DLQ and the
registry's surviving lineage (from the newest version back through ``parent``).

An accepted id must be in exactly one of ``trained``, ``held_out``, ``backlog_skipped`` of the
surviving lineage, or in the DLQ with a reason; never twice. ``duplicate`` (ids read again and
refused by the learner) is where repeats are counted, not a place.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learners.registry import open_registry
from streaming.events import DeadLetter
from streaming.kafka import Consumer, offset_key
from streaming.settings import StreamSettings

PLACES = ("trained", "held_out", "backlog_skipped")


class TopicReader:
    """Reads topics from the start, incrementally; keeps each record's id (or dead letter)."""

    def __init__(self, bootstrap: str, prefix: str = "streamcl") -> None:
        self.stream = StreamSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
        self.topics = self.stream.topics
        self.labeled: Counter[str] = Counter()  # id -> records in streamcl.labeled
        self.labeled_end = 0  # next offset of streamcl.labeled:0
        self.dead: list[DeadLetter] = []
        self.dlq_ids: dict[str, list[str]] = defaultdict(list)  # feedback id -> reasons
        self._consumer: Consumer | None = None

    def poll(self, seconds: float = 3.0) -> None:
        """Read what arrived, for up to ``seconds`` (until two polls come back empty)."""
        if self._consumer is None:
            self._consumer = Consumer(self.stream, group_id=None, client_id="chaos-audit")
            self._consumer.assign([self.topics.labeled, self.topics.dlq])
        deadline, empty = time.monotonic() + seconds, 0
        while time.monotonic() < deadline and empty < 2:
            records = self._consumer.poll(0.5, max_records=5000)
            empty = 0 if records else empty + 1
            for r in records:
                if r.topic == self.topics.labeled:
                    self.labeled_end = max(self.labeled_end, r.offset + 1)
                    self._labeled(r.value)
                else:
                    self._dead(r.value)

    def _labeled(self, raw: bytes | None) -> None:
        try:
            value = json.loads(raw or b"")
        except (ValueError, RecursionError):
            return  # a poison record: the learner dead-letters it
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            self.labeled[value["id"]] += 1

    def _dead(self, raw: bytes | None) -> None:
        try:
            d = DeadLetter.model_validate_json(raw or b"")
        except ValueError:
            return
        self.dead.append(d)
        if d.source_topic == self.topics.feedback and d.payload_encoding == "utf-8":
            try:
                value = json.loads(d.payload)
            except (ValueError, RecursionError):
                return
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                self.dlq_ids[value["id"]].append(d.reason)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass
class Lineage:
    """The surviving lineage: where each id was placed, and what it covers."""

    versions: list[int] = field(default_factory=list)  # newest first
    places: dict[str, Counter[str]] = field(default_factory=lambda: {p: Counter() for p in PLACES})
    duplicate: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # dead-lettered records (offsets)
    offsets: dict[str, int] = field(default_factory=dict)  # the newest version's
    unreadable: list[int] = field(default_factory=list)

    def placed(self, id_: str) -> int:
        return sum(self.places[p][id_] for p in PLACES)


def surviving_lineage(registry_dir: Path) -> Lineage:
    """Walk from the newest version back through ``parent``, reading each ``lineage.json``."""
    registry = open_registry(registry_dir)
    out = Lineage()
    versions = registry.versions()
    if not versions:
        return out
    newest = max(versions, key=lambda m: m.version)
    out.offsets = dict(newest.offsets)
    version: int | None = newest.version
    seen: set[int] = set()
    while version and version not in seen:
        seen.add(version)
        out.versions.append(version)
        lineage = registry.lineage(version)
        parent = registry.meta(version).parent
        if lineage is None:
            if parent:  # the start-up version (no parent) consumed nothing and has no lineage
                out.unreadable.append(version)
        else:
            for place in PLACES:
                out.places[place].update(lineage.get(place, []))
            out.duplicate.update(lineage.get("duplicate", []))
            out.skipped += len(lineage.get("skipped", []))
        version = parent
    return out


@dataclass
class Audit:
    """The verdict on accepted feedback."""

    accepted: int
    placed_once: int
    in_dlq: int
    lost: list[str]
    twice: list[str]  # accepted ids placed more than once
    trained_twice_any: int  # any id (accepted or not) placed more than once
    not_in_labeled: int  # accepted ids never seen in streamcl.labeled (in the DLQ instead, or lost)
    duplicates_refused: int
    dlq_reasons: dict[str, int]
    lineage_versions: int
    unreadable_versions: list[int]
    settled: bool

    def ok(self) -> bool:
        return not self.lost and not self.twice and self.trained_twice_any == 0

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "placed_once": self.placed_once,
            "in_dlq_with_reason": self.in_dlq,
            "lost": len(self.lost),
            "lost_sample": self.lost[:10],
            "trained_twice": len(self.twice),
            "trained_twice_sample": self.twice[:10],
            "placed_twice_any_id": self.trained_twice_any,
            "accepted_not_in_labeled": self.not_in_labeled,
            "duplicates_refused": self.duplicates_refused,
            "dlq_reasons": self.dlq_reasons,
            "lineage_versions": self.lineage_versions,
            "unreadable_versions": self.unreadable_versions,
            "settled": self.settled,
        }


def settled(reader: TopicReader, lineage: Lineage, accepted: dict[str, str]) -> bool:
    """Every accepted id reached ``labeled`` or the DLQ, and the newest version covers the whole labeled topic."""
    covered = lineage.offsets.get(offset_key(reader.topics.labeled, 0), 0)
    arrived = all(i in reader.labeled or i in reader.dlq_ids for i in accepted)
    return arrived and covered >= reader.labeled_end


def audit(reader: TopicReader, registry_dir: Path, accepted: dict[str, str], settle_s: float = 240.0) -> Audit:
    """Wait (up to ``settle_s``) until the pipeline has taken in everything, then judge."""
    deadline = time.monotonic() + settle_s
    while True:
        reader.poll()
        lineage = surviving_lineage(registry_dir)
        done = settled(reader, lineage, accepted)
        if done or time.monotonic() > deadline:
            break
        time.sleep(3.0)
    lost, twice, once, dlq = [], [], 0, 0
    for id_ in accepted:
        n = lineage.placed(id_)
        if n == 1:
            once += 1
        elif n > 1:
            twice.append(id_)
        elif reader.dlq_ids.get(id_):
            dlq += 1
        else:
            lost.append(id_)
    all_ids = set().union(*lineage.places.values())
    reasons = Counter(d.reason for d in reader.dead)
    return Audit(
        accepted=len(accepted),
        placed_once=once,
        in_dlq=dlq,
        lost=lost,
        twice=twice,
        trained_twice_any=sum(1 for i in all_ids if lineage.placed(i) > 1),
        not_in_labeled=sum(1 for i in accepted if i not in reader.labeled),
        duplicates_refused=sum(lineage.duplicate.values()),
        dlq_reasons=dict(reasons),
        lineage_versions=len(lineage.versions),
        unreadable_versions=lineage.unreadable,
        settled=done,
    )
