"""The audit trail (issue 15, point 5): every operator's action is recorded, by token name."""

from __future__ import annotations

import json
import threading

from prometheus_client import CollectorRegistry

from learners.registry import LocalRegistry, NewVersion
from services._cli_audit import cmd_history
from services.audit import AUDIT_FILE, AuditTrail, history_table, read_history
from services.controller import ModelController
from services.metrics import ControllerMetrics

TOKEN = "s3cr3t-admin-token-0123456789abcdef"


class Sent:
    """A producer that keeps what it was sent."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = fail

    def send(self, topic, value, key=None):
        if self.fail:
            raise RuntimeError("broker down")
        self.sent.append((topic, value))

    def flush(self, timeout_s=None):
        return None


class Quiet(ModelController):
    """The controller without Kafka (as tests/unit/test_gate.py builds it)."""

    def __init__(self, registry, producer=None):
        self.registry, self.model, self.decided = registry, "default", 0
        self.metrics = ControllerMetrics(CollectorRegistry())
        self._lock = threading.RLock()
        self._audit = AuditTrail(registry, "default", producer, "streamcl.audit")

    def _announce(self, version, status, extra):
        return None


def _registry(tmp_path):
    reg = LocalRegistry(tmp_path)
    for status in ("promoted", "candidate"):
        reg.create(lambda folder: (folder / "w").write_bytes(b"x"), NewVersion(status=status))
    reg.set_serving(1)
    return reg


def test_every_admin_action_is_recorded_with_who_what_when_and_outcome(tmp_path):
    """No operator's action (promote, rollback, pin, unpin, forget) left a record of who did it."""
    reg, producer = _registry(tmp_path), Sent()
    c = Quiet(reg, producer)
    c.admin("promote", 2, who="alice")
    c.admin("pin", who="alice")
    c.admin("unpin", who="bob")
    c.admin("rollback", who="bob")
    c.admin("promote", 9, who="mallory")  # refused: no version 9
    c.forget(["x" * 300], who="carol")  # refused: an id too long (checked before any actor is asked)
    records = read_history(reg)
    assert [(r["action"], r["who"], r["outcome"]) for r in records] == [
        ("promote", "alice", "ok"),
        ("pin", "alice", "ok"),
        ("unpin", "bob", "ok"),
        ("rollback", "bob", "ok"),
        ("promote", "mallory", "refused"),
        ("forget", "carol", "refused"),
    ]
    first = records[0]
    assert first["model"] == "default" and first["version"] == 2 and first["ts"].endswith("Z") and first["v"] == 1
    assert records[4]["reason"].startswith("unknown_version")
    assert [json.loads(v) for _, v in producer.sent] == records  # the same records on the audit topic
    assert {t for t, _ in producer.sent} == {"streamcl.audit"}


def test_a_record_never_holds_a_token(tmp_path):
    """An audit record must name the token, never hold it."""
    reg = _registry(tmp_path)
    trail = AuditTrail(reg, "default")
    trail.record("pin", "ops-team", {"serving": 1})
    raw = (tmp_path / AUDIT_FILE).read_text()
    assert TOKEN not in raw and json.loads(raw)["who"] == "ops-team"


def test_a_failed_record_is_counted_reported_and_the_action_stands(tmp_path, caplog):
    """A lost audit record went unnoticed."""
    reg = _registry(tmp_path)
    c = Quiet(reg, Sent(fail=True))
    out = c.admin("promote", 2, who="alice")
    assert reg.serving() == 2 and out["serving"] == 2  # the action is done
    assert out["audit"]["recorded"] is False and "broker down" in out["audit"]["problems"][0]
    assert c.audit.failures == 1 and "audit record" in caplog.text
    assert read_history(reg)[0]["action"] == "promote"  # the registry's copy was written


def test_model_history_prints_the_trail_newest_last(tmp_path, monkeypatch, capsys):
    """There was no way to read who did what to a model."""
    reg = _registry(tmp_path / "registry")
    trail = AuditTrail(reg, "default")
    trail.record("promote", "alice", {"serving": 2}, version=2)
    trail.record("rollback", "bob", {"error": "already_serving", "detail": "v1"}, version=1)
    assert "refused (already_serving: v1)" in history_table(read_history(reg)).splitlines()[-1]
    monkeypatch.setenv("STREAMCL_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("STREAMCL_REGISTRY_URI", raising=False)

    class Args:
        model, json = None, True

    assert cmd_history(Args()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["who"] for r in printed] == ["alice", "bob"]
