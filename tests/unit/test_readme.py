"""The README is a front door and the reference lives in docs/: the settings and metrics pages
are generated from the code and current, every setting and metric is documented, and every
link between the pages resolves."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from learners.settings import LearnerSettings
from services.demo import DemoSettings
from services.settings import MonitorSettings, PlatformSettings, ServeSettings
from streaming.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS_PAGE = (DOCS / "settings.md").read_text(encoding="utf-8")
METRICS_PAGE = (DOCS / "metrics.md").read_text(encoding="utf-8")
#: The reference pages the README must send readers to.
REFERENCE = ("settings.md", "metrics.md", "strategies.md", "serving.md", "monitoring.md", "operations.md")
#: Metric names dashboards, alerts and outside checks rely on (the product contract).
FIXED_METRICS = (
    "streamcl_dlq_events_total",
    "streamcl_join_expired_total",
    "streamcl_prequential_accuracy",
    "streamcl_live_accuracy",
    "streamcl_model_version",
    "streamcl_drift_detected_total",
    "streamcl_predict_requests_total",
    "streamcl_predict_latency_seconds",
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


@pytest.fixture(scope="module")
def docs_generator() -> ModuleType:
    """docs/generate.py as a module."""
    spec = importlib.util.spec_from_file_location("streamcl_docs_generate", DOCS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_current(docs_generator):
    for path, text in docs_generator.outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is out of date: run python docs/generate.py"


def test_every_setting_is_in_the_settings_page():
    classes = (StreamSettings, LearnerSettings, ServeSettings, PlatformSettings, MonitorSettings, DemoSettings)
    missing = [
        f"STREAMCL_{name.upper()}"
        for cls in classes
        for name in cls.model_fields
        if f"`STREAMCL_{name.upper()}`" not in SETTINGS_PAGE
    ]
    assert missing == []


def test_every_metric_is_in_the_metrics_table(docs_generator):
    missing = []
    families = [f for registry in docs_generator.component_registries().values() for f in registry.collect()]
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        if f"| `{name}` | {family.type} |" not in METRICS_PAGE:
            missing.append(name)
    assert missing == []


def test_fixed_metric_names_are_documented():
    assert [name for name in FIXED_METRICS if f"| `{name}` |" not in METRICS_PAGE] == []


def test_readme_is_a_front_door():
    assert len(README.splitlines()) <= 250, "the reference goes to docs/, not to the README"
    assert "make run" in README and "make test" in README
    linked = {target for target in LINK.findall(README)}
    assert [page for page in REFERENCE if f"docs/{page}" not in linked] == []
    assert "later extension" not in README  # the scoring gate is the default, not an extension


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http, https, mailto: not checked here
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        missing_anchor = bool(anchor) and dest.suffix == ".md" and dest.exists() and anchor not in _anchors(dest)
        if not dest.exists() or missing_anchor:
            broken.append(target)
    assert broken == []
