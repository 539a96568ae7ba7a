"""The audit trail of operators' actions: promote, rollback, pin, unpin, forget.

Each action is one JSON record — who (the token's *name*, never the token), when (UTC, ISO
8601), what (``action``), the model, the version(s) and the outcome (``ok``, or ``refused``
with the reason) — appended to the registry (``audit.jsonl`` in a local registry's root; one
object per record under ``audit/`` on S3, which cannot append) and published on the
``streamcl.audit`` topic. ``streamcl model history`` reads the registry's copy.

A record that cannot be written is counted (:attr:`AuditTrail.failures`), logged as an error,
and said in the action's answer (``audit.recorded: false``); the action itself is not undone:
it has already changed the registry, and refusing operators' rollbacks while storage is down
would hurt more than a gap in the trail that is logged and reported.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from learners.registry import Registry
from learners.registry.base import AUDIT_FILE, AUDIT_PREFIX

log = logging.getLogger("streamcl.audit")

__all__ = ["ACTIONS", "AUDIT_FILE", "AUDIT_PREFIX", "AuditTrail", "audit_topic", "read_history"]

ACTIONS = ("promote", "rollback", "pin", "unpin", "forget")


def audit_topic(topics: Any, prefix: str) -> str:
    """The audit topic: ``Topics.audit`` once it names one, else ``<prefix>.audit``."""
    return str(getattr(topics, "audit", f"{prefix}.audit"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditTrail:
    """Writes audit records to the registry and, with a producer, to the audit topic."""

    def __init__(
        self, registry: Registry, model: str, producer: Any = None, topic: str | None = None, counter: Any = None
    ) -> None:
        """``counter``: a Prometheus counter of the failures (``streamcl_audit_failures_total``)."""
        self.registry = registry
        self.model = model
        self.producer, self.topic = producer, topic
        self.failures = 0  # records that could not be written somewhere
        self.counter = counter

    def record(self, action: str, who: str, outcome: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Write one record of ``action`` by ``who``; ``outcome`` is the action's answer (an
        ``error`` in it makes it ``refused``). Returns ``{"recorded": bool, "problems": [...]}``."""
        refused = "error" in outcome
        record = {
            "v": 1,
            "ts": _now(),
            "who": who,
            "action": action,
            "model": self.model,
            **{k: v for k, v in fields.items() if v is not None},
            "outcome": "refused" if refused else "ok",
        }
        if refused:
            record["reason"] = f"{outcome.get('error')}: {outcome.get('detail')}"
        problems = []
        try:
            self.registry.append_audit(record)
        except Exception as exc:  # storage down, permissions: reported, not raised
            problems.append(f"registry: {type(exc).__name__}: {exc}")
        if self.producer is not None and self.topic:
            try:
                self.producer.send(self.topic, json.dumps(record).encode(), key=self.model)
                self.producer.flush()
            except Exception as exc:
                problems.append(f"topic {self.topic}: {type(exc).__name__}: {exc}")
        if problems:
            self.failures += 1
            if self.counter is not None:
                self.counter.inc()
            log.error("the audit record of %s by %s was not written everywhere: %s", action, who, problems)
        return {"recorded": not problems, **({"problems": problems} if problems else {})}


def read_history(registry: Registry, model: str | None = None) -> list[dict[str, Any]]:
    """Every audit record of the registry, oldest first (``model``: that model's only)."""
    records = [r for r in registry.read_audit() if model is None or r.get("model") == model]
    return sorted(records, key=lambda r: str(r.get("ts", "")))


def history_table(records: list[dict[str, Any]]) -> str:
    """The records as a text table (newest last)."""
    rows = [("when", "who", "action", "model", "version", "outcome")]
    for r in records:
        version = r.get("version", r.get("versions", ""))
        outcome = r.get("outcome", "") + (f" ({r['reason']})" if r.get("reason") else "")
        rows.append(
            (
                str(r.get("ts", "")),
                str(r.get("who", "")),
                str(r.get("action", "")),
                str(r.get("model", "")),
                "" if version is None else str(version),
                outcome,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
