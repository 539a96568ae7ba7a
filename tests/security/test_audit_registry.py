"""The audit trail in the registry (issue 15, point 5): an append-only file in a local registry,
one object per record on S3, both read back through the registry's public interface."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import boto3
from prometheus_client import CollectorRegistry

from learners.registry import LocalRegistry
from learners.registry.base import AUDIT_FILE
from services.audit import AuditTrail, read_history
from services.metrics import ControllerMetrics

# the moto server and bucket fixtures of the S3 registry's unit tests (one module name per basename)
_spec = importlib.util.spec_from_file_location(
    "_s3_audit_fixtures", Path(__file__).parents[1] / "unit" / "test_s3registry.py"
)
assert _spec is not None and _spec.loader is not None
_s3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_s3)
endpoint, bucket, make = _s3.endpoint, _s3.bucket, _s3.make


def test_s3_audit_trail_is_one_object_per_record_read_back_in_order(bucket, make):
    """On S3 the audit trail went through the backend's private client: records are written and
    read through the registry's own append_audit/read_audit."""
    reg = make()
    trail = AuditTrail(reg, "default")
    for who in ("alice", "bob", "carol"):
        assert trail.record("pin", who, {"serving": 1}) == {"recorded": True}
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert len([k for k in keys if k.startswith("team/registry/audit/")]) == 3
    again = make()  # another machine
    assert [r["who"] for r in again.read_audit()] == ["alice", "bob", "carol"]
    assert [r["who"] for r in read_history(again, "default")] == ["alice", "bob", "carol"]
    assert read_history(again, "news") == []


def test_local_audit_trail_appends_whole_lines_from_many_threads(tmp_path):
    """Records written at once by several threads must each stay one whole line."""
    reg = LocalRegistry(tmp_path)
    big = "x" * 100_000  # far over a pipe's atomic write size

    def write(i: int) -> None:
        for j in range(20):
            reg.append_audit({"ts": f"{i}-{j}", "who": f"t{i}", "note": big})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / AUDIT_FILE).read_text().splitlines()
    assert len(lines) == 80 and all(json.loads(line)["note"] == big for line in lines)
    with (tmp_path / AUDIT_FILE).open("a") as f:
        f.write('{"torn": \n[1]\n')  # a torn line and a line that is no record
    assert len(reg.read_audit()) == 80


def test_unwritable_audit_trail_is_counted_in_the_metric(tmp_path):
    """A lost audit record was only a log line: streamcl_audit_failures_total counts it."""
    reg = LocalRegistry(tmp_path)
    (tmp_path / AUDIT_FILE).mkdir()  # the file cannot be opened for appending
    metrics = ControllerMetrics(CollectorRegistry())
    trail = AuditTrail(reg, "default", counter=metrics.audit_failures)
    out = trail.record("unpin", "alice", {"serving": 1})
    assert out["recorded"] is False and "audit.jsonl" in out["problems"][0]
    assert "streamcl_audit_failures_total 1.0" in metrics.exposition()
