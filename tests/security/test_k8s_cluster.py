"""A hardened cluster (issue 15, point 7): what `kubectl kustomize` of each overlay renders, read as
an attacker who holds one pod would: who reaches the Ray dashboard, what Kafka lets each component
do, what a pod may write and reach, and what the namespace admits."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBECTL = shutil.which("kubectl")
#: What each component's Kafka user may do (topics under the default prefix; groups under "streamcl."),
#: read from the code: services/serving/_replica.py, streaming/joiner.py, learners/service.py,
#: services/controller.py and services/shadow.py, services/monitor.py.
ALLOWED: dict[str, dict[str, set[str]]] = {
    "serve": {"topic:texts": {"Write"}, "topic:predictions": {"Write"}, "topic:feedback": {"Write"}},
    "joiner": {
        "topic:texts": {"Read"},
        "topic:feedback": {"Read"},
        "topic:predictions": {"Read"},
        "topic:labeled": {"Write"},
        "topic:dlq": {"Write"},
        "group:joiner": {"Read"},
        "group:learner": set(),
    },
    "learner": {
        "topic:labeled": {"Read"},
        "topic:drift": {"Read", "Write"},
        "topic:models": {"Write"},
        "topic:dlq": {"Write"},
        "group:learner": {"Read"},
        "group:learner-drift": {"Read"},
    },
    "controller": {
        "topic:models": {"Read", "Write"},
        "topic:texts": {"Read"},
        "topic:predictions": {"Read"},
        "topic:feedback": {"Read"},
        "topic:dlq": {"Write"},
        "topic:audit": {"Write"},  # services/audit.py
        "group:controller": {"Read"},
    },
    "monitor": {
        "topic:texts": {"Read"},
        "topic:predictions": {"Read"},
        "topic:drift": {"Write"},
        "group:monitor": {"Read"},
    },
}

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl missing (`make install` installs it)")

# the rendering helpers of the manifest checks (tests/unit/test_k8s.py; one module name per basename)
_spec = importlib.util.spec_from_file_location("_k8s_checks", ROOT / "tests" / "unit" / "test_k8s.py")
assert _spec is not None and _spec.loader is not None
_k8s = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_k8s)
objects, pod_templates, containers, config, selects = (
    _k8s.objects,
    _k8s.pod_templates,
    _k8s.containers,
    _k8s.config,
    _k8s.selects,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboard_policy_not_open_to_all_namespaces(overlay: str) -> None:
    """The Ray dashboard (Jobs API: runs code) and client ports admitted a kuberay-operator pod of any namespace."""
    sources = []
    for policy in objects(overlay, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if not ports or ports & {8265, 10001}:
                sources += [src for src in rule["from"] if "namespaceSelector" in src or "ipBlock" in src]
    assert sources, "the KubeRay operator must reach the dashboard"
    for src in sources:
        assert "ipBlock" not in src
        labels = src["namespaceSelector"].get("matchLabels", {})
        assert set(labels) == {"kubernetes.io/metadata.name"} and not src["namespaceSelector"].get("matchExpressions")
    # the operator's namespace is the overlay's to set
    assert "streamcl-kuberay-operator" in (K8S / "overlays" / overlay / "kustomization.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_read_only_root_filesystem_everywhere(overlay: str) -> None:
    """Containers could write anywhere in their image (no readOnlyRootFilesystem)."""
    state_dir = config(overlay)["STREAMCL_STATE_DIR"]
    for where, template in pod_templates(overlay):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for c in containers(template):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, f"{where} {c['name']}"
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            for path in ("/tmp", "/tmp/ray", state_dir):
                assert "emptyDir" in volumes[mounts[path]], f"{where}: {path} is not a writable emptyDir"
    (svc,) = objects(overlay, "RayService")
    autoscaler = svc["spec"]["rayClusterConfig"].get("autoscalerOptions")
    if autoscaler:
        assert autoscaler["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pss_restricted_label(overlay: str) -> None:
    """The namespace enforced Pod Security ``baseline`` only; every pod must meet ``restricted``."""
    (ns,) = objects(overlay, "Namespace")
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for where, template in pod_templates(overlay):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        assert all(set(v) & {"emptyDir", "secret", "configMap", "projected"} for v in spec["volumes"]), where
        for c in containers(template):
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add") and not ctx.get("privileged"), where
            assert ctx.get("seccompProfile", spec["securityContext"]["seccompProfile"])["type"] == "RuntimeDefault"
            assert not any(p.get("hostPort") for p in c.get("ports", [])), where


def _users(overlay: str) -> dict[str, dict[str, Any]]:
    return {u["metadata"]["name"].removeprefix("streamcl-"): u for u in objects(overlay, "KafkaUser")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_user_per_component_with_acls_on_only_its_topics(overlay: str) -> None:
    """Kafka had no users or ACLs: a compromised replica could write streamcl.labeled or streamcl.models."""
    (kafka,) = objects(overlay, "Kafka")
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in kafka["spec"]["entityOperator"]
    users = _users(overlay)
    assert set(ALLOWED) <= set(users)
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert user["spec"]["authorization"]["type"] == "simple"
        granted: dict[str, set[str]] = {}
        for acl in user["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            assert res["patternType"] == "literal" and "*" not in res["name"], f"{name}: {res}"
            assert set(acl["operations"]) <= {"Read", "Write", "Describe"}, f"{name}: {acl['operations']}"
            short = f"{res['type']}:{res['name'].removeprefix('streamcl.')}"
            granted.setdefault(short, set()).update(set(acl["operations"]) - {"Describe"})
        allowed = ALLOWED.get(name) or {
            k: v for c in ALLOWED.values() if c is not ALLOWED["serve"] for k, v in c.items()
        }
        for resource, ops in granted.items():
            assert resource in allowed and ops <= (allowed[resource] | _union(resource, name)), (
                f"{name}: {resource} {ops}"
            )
    serve = {a["resource"]["name"]: set(a["operations"]) for a in users["serve"]["spec"]["authorization"]["acls"]}
    assert "Write" not in serve.get("streamcl.labeled", set()) and "Write" not in serve.get("streamcl.models", set())
    # each pod logs in as its own user, with the password from that user's Secret
    for where, template in pod_templates(overlay):
        (main,) = template["spec"]["containers"]
        env = {e["name"]: e for e in main["env"]}
        user = env["STREAMCL_KAFKA_SASL_USERNAME"]["value"]
        assert user in {u["metadata"]["name"] for u in users.values()}, where
        assert env["STREAMCL_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": user, "key": "password"}
        if where.startswith("RayService"):
            assert user == "streamcl-serve", where  # Serve replicas read the pod's env


def _union(resource: str, name: str) -> set[str]:
    """The workers supervisor hands its settings to the actors it starts: it may do what they do together."""
    if name != "workers":
        return set()
    return set().union(*(c.get(resource, set()) for n, c in ALLOWED.items() if n != "serve"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tls_listener(overlay: str) -> None:
    """Kafka was reached over a plaintext listener without authentication."""
    (kafka,) = objects(overlay, "Kafka")
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert all(x["tls"] is True and x["authentication"]["type"] == "scram-sha-512" for x in listeners)
    cm = config(overlay)
    port = int(cm["STREAMCL_KAFKA_BOOTSTRAP"].rpartition(":")[2])
    assert port in {x["port"] for x in listeners}
    assert cm["STREAMCL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert cm["STREAMCL_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    ca = Path(cm["STREAMCL_KAFKA_SSL_CAFILE"])
    for where, template in pod_templates(overlay):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (main,) = template["spec"]["containers"]
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == str(ca.parent)]
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert", where
        assert {"key": "ca.crt", "path": ca.name} in secret["items"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_limited_to_what_each_pod_needs(overlay: str) -> None:
    """Egress was open: a compromised pod could reach any address (the Kubernetes API, the internet)."""
    policies = [p for p in objects(overlay, "NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
    for where, template in pod_templates(overlay):
        labels = template["metadata"]["labels"]
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert mine, f"{where}: no egress policy"
        rules = [r for p in mine for r in p["spec"].get("egress", [])]
        assert rules and all(r.get("to") for r in rules), f"{where}: a rule open to every destination"
        ports = {p["port"] for r in rules for p in r.get("ports", [])}
        assert {53, 9093, 443} <= ports, where
        for r in rules:
            for dest in r["to"]:
                if "ipBlock" in dest:
                    assert dest["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0"), where
                    assert {p["port"] for p in r["ports"]} == {443}, where
    workers = dict(pod_templates(overlay))["Deployment/streamcl-workers"]["metadata"]["labels"]
    to_ray = [
        r
        for p in policies
        if selects(p["spec"]["podSelector"], workers)
        for r in p["spec"].get("egress", [])
        if any(
            d.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "ray-head"
            for d in r["to"]
        )
    ]
    assert to_ray and all({p["port"] for p in r["ports"]} == {10001} for r in to_ray)


def _component(dest: dict[str, Any]) -> str | None:
    return dest.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")


def test_image_digest_arg() -> None:
    """The base image was pulled by tag only: the build must take a digest (a build argument), documented."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    (arg,) = re.findall(r"^ARG (PYTHON_IMAGE)=", dockerfile, re.M)
    assert all(line.split()[1] == "${" + arg + "}" for line in dockerfile.splitlines() if line.startswith("FROM "))
    readme = (K8S / "README.md").read_text()
    assert re.search(rf"--build-arg {arg}=[^\s`]+@sha256:", readme), "document pinning the base image by digest"
    assert re.search(r"digest: sha256:", readme), "document pinning streamcl's image by digest in an overlay"
