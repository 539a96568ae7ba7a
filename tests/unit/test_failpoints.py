"""Failpoints: an armed one kills its process (status 137) once per folder; unarmed ones do nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streaming import failpoints

SCRIPT = """
import logging
logging.basicConfig(level=logging.INFO)
from streaming.failpoints import failpoint
print("before", flush=True)
failpoint("learner.after_registry_write")
print("after", flush=True)
"""


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCL_FAILPOINTS")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_an_armed_failpoint_kills_once_then_lets_the_process_pass(tmp_path: Path):
    env = {
        "STREAMCL_FAILPOINTS": "joiner.after_send, learner.after_registry_write",
        "STREAMCL_FAILPOINTS_DIR": str(tmp_path),
    }
    first = run(env)
    assert first.returncode == failpoints.EXIT_STATUS == 137
    assert first.stdout.split() == ["before"]  # nothing after the point ran
    assert "ERROR" in first.stderr and "FAILPOINT learner.after_registry_write" in first.stderr
    assert (tmp_path / "learner.after_registry_write.fired").is_file()
    assert not (tmp_path / "joiner.after_send.fired").exists()
    second = run(env)  # the restarted process passes the point
    assert second.returncode == 0 and second.stdout.split() == ["before", "after"]


def test_a_failpoint_not_armed_does_nothing(tmp_path: Path):
    for env in ({}, {"STREAMCL_FAILPOINTS": "joiner.after_send", "STREAMCL_FAILPOINTS_DIR": str(tmp_path)}):
        done = run(env)
        assert done.returncode == 0 and done.stdout.split() == ["before", "after"]
    assert list(tmp_path.iterdir()) == []


def test_in_this_process_no_failpoint_is_armed():
    assert not failpoints.ARMED
    failpoints.failpoint("learner.after_model_event")  # returns
