"""Regenerate the README's settings tables and metrics table from the code.

python docs/readme_tables.py        (tests/unit/test_readme.py checks nothing is missing)
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from learners.settings import LearnerSettings
from services.demo import DemoSettings
from services.settings import MonitorSettings, PlatformSettings, ServeSettings
from streaming.metrics import PARTS, Metrics
from streaming.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (StreamSettings, LearnerSettings, ServeSettings, PlatformSettings, MonitorSettings, DemoSettings)
#: Families several processes fill, each with the series of the detectors it runs.
SHARED_BY_DETECTOR = {
    "streamcl_drift_detected",
    "streamcl_drift_score",
    "streamcl_drift_threshold",
    "streamcl_drift_skipped",
}


def settings_tables() -> str:
    out = []
    for cls in SETTINGS:
        rows = [
            f"**{cls.__name__}**: {(cls.__doc__ or '').strip()}",
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
        ]
        for name, field in cls.model_fields.items():
            value = field.get_default(call_default_factory=True)
            if value is None:
                value = "unset"
            elif isinstance(value, list) and value:
                value = ",".join(value)
            rows.append(f"| `STREAMCL_{name.upper()}` | `{value}` | {field.description} |")
        out.append("\n".join(rows) + "\n")
    return "\n".join(out) + "\n"


def metrics_table() -> str:
    owners: dict[str, list[str]] = {}
    for part in PARTS:
        for family in Metrics(CollectorRegistry(), parts=(part,)).registry.collect():
            owners.setdefault(family.name, []).append(part)
    metrics = Metrics(CollectorRegistry())
    labels = {v._name: v._labelnames for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)}
    rows = ["| metric | type | labels | meaning | reported by |", "|---|---|---|---|---|"]
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names = ", ".join(f"`{label}`" for label in labels.get(family.name, ())) or "-"
        by = owners[family.name][0] if len(owners[family.name]) == 1 else "every process"
        if family.name in SHARED_BY_DETECTOR:
            by = "monitor (input, prediction), learner (concept)"
        rows.append(f"| `{name}` | {family.type} | {names} | {family.documentation} | {by} |")
    return "\n".join(rows) + "\n\n"


def main() -> None:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    start, end = text.index("**StreamSettings**"), text.index("## Metrics")
    text = text[:start] + settings_tables() + text[end:]
    start, end = text.index("| metric | type | labels | meaning | reported by |"), text.index("## Benchmarks")
    text = text[:start] + metrics_table() + text[end:]
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
