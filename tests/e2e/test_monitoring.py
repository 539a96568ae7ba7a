"""End to end: `streamcl up --demo sentiment-drift --prometheus` with short domains; a real
Prometheus scrapes it with the rules loaded, every dashboard panel's query returns data, and
the demo's domain changes raise streamcl_drift_detected_total."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from streaming.broker import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_prometheus_scrapes_the_demo_every_panel_has_data_and_drift_is_detected(tmp_path, generator, interrupt):
    ports = {k: free_port() for k in ("broker", "api", "metrics", "prometheus")}
    env = {
        **os.environ,
        "STREAMCL_EMBEDDED_BROKER": f"127.0.0.1:{ports['broker']}",
        "STREAMCL_PORT": str(ports["api"]),
        "STREAMCL_METRICS_PORT": str(ports["metrics"]),
        "STREAMCL_PROMETHEUS_PORT": str(ports["prometheus"]),
        "STREAMCL_PROMETHEUS_SCRAPE_S": "2",
        # a short demo: domains of 30 s at 8 texts/s, drift windows to match
        "STREAMCL_DEMO_DOMAIN_SECONDS": "30",
        "STREAMCL_DEMO_RATE": "8",
        "STREAMCL_DEMO_LABEL_DELAY_S": "2",
        "STREAMCL_DRIFT_INPUT_REFERENCE": "100",
        "STREAMCL_DRIFT_INPUT_WINDOW": "60",
        "STREAMCL_DRIFT_INPUT_STEP": "10",
        "STREAMCL_DRIFT_PREDICTION_REFERENCE": "80",
        "STREAMCL_DRIFT_PREDICTION_WINDOW": "80",
        "STREAMCL_DRIFT_PREDICTION_STEP": "20",
        "STREAMCL_VERSION_EVERY_S": "10",
        # shadow mode: each candidate scores 16 sampled live texts before the gate decides
        "STREAMCL_SHADOW_TEXTS": "16",
        "STREAMCL_SHADOW_SHARE": "0.5",
        "STREAMCL_SHADOW_MAX_S": "30",
    }
    env.pop("STREAMCL_KAFKA_BOOTSTRAP", None)
    log_path = tmp_path / "up.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--demo", "sentiment-drift", "--prometheus", "--progress-s", "10"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    panels = generator.panel_queries()
    try:
        missing: list[str] = []
        deadline = time.monotonic() + 420
        while True:
            assert proc.poll() is None, log_path.read_text()[-5000:]
            try:
                missing = [f"{board} / {title}: {expr}" for board, title, expr in panels if not query(prometheus, expr)]
                detections = query(prometheus, "sum(streamcl_drift_detected_total)")
                detected = bool(detections) and float(detections[0]["value"][1]) > 0
                shadowed = bool(query(prometheus, "max_over_time(streamcl_shadow_texts[15m]) >= 16"))
                # the alert follows the counter at the next rule evaluation
                alerts = get(prometheus + "/api/v1/alerts")["data"]["alerts"]
                drift = [a for a in alerts if a["labels"]["alertname"] == "StreamclDriftDetected"]
            except OSError:
                missing, detected, drift, shadowed = ["prometheus not answering yet"], False, [], False
            if not missing and detected and drift and shadowed:
                break
            assert time.monotonic() < deadline, (
                f"no data for {missing} or no drift ({detected=}, alerts {drift}) or no shadow ({shadowed=})"
            )
            time.sleep(5)

        # the rules file is loaded: both groups, every alert
        groups = {g["name"]: g["rules"] for g in get(prometheus + "/api/v1/rules")["data"]["groups"]}
        assert set(groups) == {"streamcl.recording", "streamcl.alerts"}
        assert all(r["health"] == "ok" for rules in groups.values() for r in rules), groups
        # the drift detection is an alert too, labeled by detector and kind
        assert {a["labels"]["kind"] for a in drift} <= {"input", "prediction", "concept"}
        # the platform's scrape target is healthy
        targets = get(prometheus + "/api/v1/targets")["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        # every service reports itself up, and none of them is alerted as down
        up = {r["metric"]["component"]: float(r["value"][1]) for r in query(prometheus, "streamcl_component_up")}
        assert {"joiner", "learner", "controller", "monitor"} <= set(up) and set(up.values()) == {1.0}, up
        assert not [a for a in alerts if a["labels"]["alertname"] == "StreamclComponentDown"], alerts
    finally:
        code = interrupt(proc)
        log.close()
    assert code == 0, log_path.read_text()[-5000:]
    text = log_path.read_text()
    assert "drift detected by" in text
    assert "shadowed:" in text  # a candidate went through shadow mode before its gate decision
    assert "streamcl: stopped" in text
