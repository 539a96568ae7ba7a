"""The alert rules pass promtool (check and unit tests), the generated copies are current, and
every dashboard query names metrics that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.metrics import all_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "streamcl-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "streamcl-rules.test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool missing: `make install` installs the Debian package prometheus"
    return found


def test_promtool_check_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_test_rules():
    done = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_test():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert alerts == tested


def test_generated_copies_are_current(generator):
    assert generator.stale() == [], "run: python deploy/generate.py"
    rule = yaml.safe_load((ROOT / "deploy/k8s/base/monitoring/prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


NAME = re.compile(r"\b(streamcl[_:][a-z_:0-9]*)")


def known_series() -> set[str]:
    names, registry = set(), CollectorRegistry()
    all_metrics(registry)
    for family in registry.collect():
        for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",)):
            names.add(family.name + suffix)
    names |= {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}
    return names


def test_every_query_names_existing_metrics(generator):
    known = known_series()
    exprs = [expr for _, _, expr in generator.panel_queries()]
    exprs += [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    unknown = {name for expr in exprs for name in NAME.findall(expr) if name not in known}
    assert unknown == set()


@pytest.mark.parametrize("board", ["streamcl-overview.json", "streamcl-learning.json"])
def test_dashboards_are_grafana_json_with_a_datasource_variable(board):
    import json

    data = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / board).read_text())
    assert data["uid"] == board.removesuffix(".json")
    assert data["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] for p in data["panels"])


@pytest.mark.parametrize("board", ["streamcl-overview.json", "streamcl-learning.json"])
def test_dashboard_panels_do_not_overlap(board):
    import json

    panels = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / board).read_text())["panels"]
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_the_serve_file_is_a_serve_deploy_config_of_the_app_builder(generator):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(generator.SERVE_CONFIG.read_text()))
    (app,) = config.applications
    assert app.import_path == "services.serve_app:from_env" and app.route_prefix == "/"
    assert [d.name for d in app.deployments] == ["Api"]


def test_check_fails_when_the_rayservice_serve_config_differs_from_the_serve_file(generator, tmp_path, monkeypatch):
    source = yaml.safe_load(generator.SERVE_CONFIG.read_text())
    source["applications"][0]["runtime_env"] = {"env_vars": {"SOMETHING_NEW": "1"}}
    edited = tmp_path / "streamcl.yaml"
    edited.write_text(yaml.safe_dump(source))
    monkeypatch.setattr(generator, "SERVE_CONFIG", edited)
    assert set(generator.SERVE_TARGETS) <= set(generator.stale())
    assert generator.main(["--check"]) == 1


@pytest.mark.parametrize(
    ("settings", "scaling"),
    [
        ({}, {"num_replicas": 1}),
        ({"STREAMCL_REPLICAS": "3", "STREAMCL_MAX_REPLICAS": "3"}, {"num_replicas": 3}),
        (
            {"STREAMCL_REPLICAS": "2", "STREAMCL_MAX_REPLICAS": "8", "STREAMCL_TARGET_ONGOING_REQUESTS": "4"},
            {
                "num_replicas": "auto",
                "autoscaling_config": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 4.0},
            },
        ),
    ],
)
def test_the_serve_config_scales_the_api_as_the_settings_do(generator, settings, scaling):
    (api,) = generator.serve_config(settings)["applications"][0]["deployments"]
    assert api == {"name": "Api", **scaling}
