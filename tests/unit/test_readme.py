"""The README documents every setting and every metric (one table each)."""

from pathlib import Path

from prometheus_client import CollectorRegistry

from learners.settings import LearnerSettings
from services.demo import DemoSettings
from services.settings import MonitorSettings, PlatformSettings, ServeSettings
from streaming.metrics import Metrics
from streaming.settings import StreamSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme():
    classes = (StreamSettings, LearnerSettings, ServeSettings, PlatformSettings, MonitorSettings, DemoSettings)
    missing = [
        f"STREAMCL_{name.upper()}"
        for cls in classes
        for name in cls.model_fields
        if f"`STREAMCL_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_metric_is_in_the_readme_table():
    missing = []
    for family in Metrics(CollectorRegistry()).registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if f"| `{name}` | {family.type} |" not in README:
            missing.append(name)
    assert missing == []
