"""Entry points for a cluster: the Serve application builder and `streamcl workers`."""

from __future__ import annotations

from ray.serve import Application

from services.cli import main
from services.serve_app import from_env


def test_the_serve_app_builds_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMCL_REPLICAS", "2")
    monkeypatch.setenv("STREAMCL_MAX_REPLICAS", "4")
    app = from_env({})
    assert isinstance(app, Application)
    config = app._bound_deployment._deployment_config  # what Serve will deploy
    assert config.autoscaling_config.min_replicas == 2 and config.autoscaling_config.max_replicas == 4
    assert config.max_ongoing_requests == 64


def test_workers_need_a_ray_address(monkeypatch, capsys):
    monkeypatch.delenv("STREAMCL_RAY_ADDRESS", raising=False)
    assert main(["workers"]) == 2
    assert "STREAMCL_RAY_ADDRESS" in capsys.readouterr().err
