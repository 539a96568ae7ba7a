"""The Kubernetes manifests (deploy/k8s): each overlay builds with kustomize, its core objects pass
Kubernetes' own schemas, its custom resources carry the fields their operators read, and the
settings, topics, ports and entry points they name agree with the code."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from learners.settings import LearnerSettings
from services.cli import parser
from services.settings import MonitorSettings, PlatformSettings, ServeSettings
from streaming.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBECTL = shutil.which("kubectl")
#: Kubernetes release whose schemas the core objects are checked against (kubernetes-validate ships them).
KUBE_VERSION = "1.31"
#: The operators' custom resources: checked field by field below, as their operators document them.
CUSTOM = {
    ("ray.io/v1", "RayService"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
SETTINGS = (StreamSettings, LearnerSettings, ServeSettings, PlatformSettings, MonitorSettings)
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} | {
    f"STREAMCL_{name.upper()}"
    for cls in SETTINGS
    for name, field in cls.model_fields.items()
    if "SecretStr" in str(field.annotation)
}

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl missing (`make install` installs it)")


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of an overlay, as documents (shared between tests: do not modify)."""
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in render(overlay) if doc["kind"] == kind]


def config(overlay: str) -> dict[str, str]:
    (cm,) = [doc for doc in objects(overlay, "ConfigMap") if doc["metadata"]["name"] == "streamcl-config"]
    return cm["data"]


def rayservice(overlay: str) -> dict[str, Any]:
    (svc,) = objects(overlay, "RayService")
    return svc


def serve_config(overlay: str) -> Any:
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(yaml.safe_load(rayservice(overlay)["spec"]["serveConfigV2"]))


def pod_templates(overlay: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every workload: Deployments and the Ray head and worker groups."""
    for doc in objects(overlay, "Deployment"):
        yield f"Deployment/{doc['metadata']['name']}", doc["spec"]["template"]
    cluster = rayservice(overlay)["spec"]["rayClusterConfig"]
    yield "RayService head", cluster["headGroupSpec"]["template"]
    for group in cluster["workerGroupSpecs"]:
        yield f"RayService group {group['groupName']}", group["template"]


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": present and value in e["values"],
            "NotIn": value not in e.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]]
        if not ok:
            return False
    return True


def top_level(source: Path) -> tuple[set[str], set[str]]:
    """(functions, Serve deployments) defined at the top of a module, read without importing it."""
    functions, deployments = set(), set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            functions.add(node.name)
        if isinstance(node, ast.ClassDef) and any("deployment" in ast.unparse(d) for d in node.decorator_list):
            deployments.add(node.name)
    return functions, deployments


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_match_the_kubernetes_schemas(overlay):
    docs = render(overlay)
    core = [d for d in docs if (d["apiVersion"], d["kind"]) not in CUSTOM]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Deployment", "NetworkPolicy"}
    # The pod templates inside the RayService are core objects too: check them as PodTemplates.
    core += [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"}, "template": template}
        for where, template in pod_templates(overlay)
        if where.startswith("RayService")
    ]
    errors = []
    for doc in core:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_are_the_operators_kinds(overlay):
    custom = {
        (d["apiVersion"], d["kind"])
        for d in render(overlay)
        if "." in (group := d["apiVersion"].rpartition("/")[0]) and not group.endswith(".k8s.io")
    }
    assert custom - CUSTOM == set()
    assert {k for _, k in custom} >= {"RayService", "Kafka", "KafkaNodePool", "KafkaTopic", "PrometheusRule"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayservice_deploys_the_serve_app_from_the_image(overlay):
    svc = rayservice(overlay)
    assert svc["apiVersion"] == "ray.io/v1" and svc["metadata"]["name"] == "streamcl"
    serve = serve_config(overlay)
    (app,) = serve.applications
    assert app.import_path == "services.serve_app:from_env" and app.route_prefix == "/"
    functions, deployments = top_level(ROOT / "services" / "serve_app.py")
    assert "from_env" in functions
    assert {d.name for d in app.deployments} <= deployments
    assert serve.http_options.port == ServeSettings.model_fields["port"].default
    cluster = svc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == importlib.metadata.version("ray")
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    groups = cluster["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert g["template"]["spec"]["containers"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_streamcl_pod_runs_the_image_with_the_config_and_the_secret(overlay):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for where, template in pod_templates(overlay):
        (main,) = template["spec"]["containers"]
        name, _, tag = main["image"].rpartition(":")
        assert name.split("/")[-1] == "streamcl" and tag.startswith(version), where
        refs = [next(iter(ref.items())) for ref in main["envFrom"]]
        assert ("configMapRef", {"name": "streamcl-config"}) in refs, where
        assert ("secretRef", {"name": "streamcl-secrets"}) in refs, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_workers_deployment_runs_streamcl_workers_on_the_ray_cluster(overlay):
    (dep,) = [d for d in objects(overlay, "Deployment") if d["metadata"]["name"] == "streamcl-workers"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "streamcl"
    assert parser().parse_args(container["command"][1:]).command == "workers"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    head = rayservice(overlay)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    client = next(p["containerPort"] for p in head["ports"] if p["name"] == "client")
    assert env["STREAMCL_RAY_ADDRESS"] == f"ray://{rayservice(overlay)['metadata']['name']}-head-svc:{client}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_replicas_in_serve_config_and_settings_agree(overlay):
    (deployment,) = serve_config(overlay).applications[0].deployments
    cm = config(overlay)
    scaling = deployment.autoscaling_config
    if overlay == "prod":
        assert deployment.num_replicas == "auto" and scaling["min_replicas"] < scaling["max_replicas"]
        assert int(cm["STREAMCL_REPLICAS"]) == scaling["min_replicas"]
        assert int(cm["STREAMCL_MAX_REPLICAS"]) == scaling["max_replicas"]
        assert float(cm["STREAMCL_TARGET_ONGOING_REQUESTS"]) == scaling["target_ongoing_requests"]
    else:
        assert deployment.num_replicas == int(cm["STREAMCL_REPLICAS"]) == 1
        assert "STREAMCL_MAX_REPLICAS" not in cm


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_config_v2_is_the_serve_file_with_the_overlays_scaling(overlay):
    source = yaml.safe_load((ROOT / "deploy" / "serve" / "streamcl.yaml").read_text())
    rendered = yaml.safe_load(rayservice(overlay)["spec"]["serveConfigV2"])
    assert rendered.pop("http_options") == {"host": config(overlay)["STREAMCL_HOST"], "port": 8000}
    assert source.pop("http_options")["host"] == ServeSettings.model_fields["host"].default
    for serve in (source, rendered):
        (api,) = serve["applications"][0]["deployments"]
        for key in ("num_replicas", "autoscaling_config"):
            api.pop(key, None)
    assert rendered == source


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_is_kraft_with_a_listener_for_streamcl_only(overlay):
    (kafka,) = objects(overlay, "Kafka")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2" and "zookeeper" not in kafka["spec"]
    assert kafka["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all({"name", "port", "type", "tls"} <= set(x) for x in listeners)
    host, port = config(overlay)["STREAMCL_KAFKA_BOOTSTRAP"].split(":")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    (listener,) = [x for x in listeners if x["port"] == int(port)]
    # TLS with SCRAM users since issue 15 (tests/security/test_k8s_kafka.py checks the users)
    assert listener["type"] == "internal" and listener["tls"] is True
    assert [p["podSelector"]["matchLabels"] for p in listener["networkPolicyPeers"]] == [
        {"app.kubernetes.io/name": "streamcl"}
    ]
    pools = objects(overlay, "KafkaNodePool")
    assert pools and all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools)
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    assert all(p["spec"]["resources"]["limits"] and p["spec"]["storage"] for p in pools)
    assert kafka["spec"]["entityOperator"]["topicOperator"]["resources"]["limits"]


def brokers(overlay: str) -> int:
    return sum(p["spec"]["replicas"] for p in objects(overlay, "KafkaNodePool") if "broker" in p["spec"]["roles"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_the_code_uses_has_a_kafka_topic(overlay):
    cm = config(overlay)
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in objects(overlay, "KafkaTopic")}
    assert sorted(topics) == sorted(StreamSettings(topic_prefix=cm["STREAMCL_TOPIC_PREFIX"]).topics.all())
    (kafka,) = objects(overlay, "Kafka")
    for name, t in topics.items():
        spec, conf = t["spec"], t["spec"].get("config", {})
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"], name
        assert spec["partitions"] >= 1 and 1 <= spec["replicas"] <= brokers(overlay), name
        assert spec["replicas"] == int(cm["STREAMCL_TOPIC_REPLICATION"]), name
        assert conf.get("min.insync.replicas", 1) <= spec["replicas"], name
        assert "retention.ms" in conf or conf.get("cleanup.policy") == "compact", name
        if t["metadata"]["labels"]["streamcl/topic-class"] == "data":
            assert spec["partitions"] == int(cm["STREAMCL_TOPIC_PARTITIONS"]), name
    # The joiner reads these three together and joins by key: they must be co-partitioned.
    joined = {
        topics[f"{cm['STREAMCL_TOPIC_PREFIX']}.{t}"]["spec"]["partitions"] for t in ("texts", "feedback", "predictions")
    }
    assert len(joined) == 1


def test_prod_survives_a_broker_loss_without_losing_acknowledged_events():
    (kafka,) = objects("prod", "Kafka")
    cfg = kafka["spec"]["kafka"]["config"]
    assert brokers("prod") == 3 and cfg["default.replication.factor"] == 3 and cfg["min.insync.replicas"] == 2
    assert cfg["offsets.topic.replication.factor"] == 3
    for t in objects("prod", "KafkaTopic"):
        assert t["spec"]["replicas"] == 3
        assert t["spec"].get("config", {}).get("min.insync.replicas", cfg["min.insync.replicas"]) == 2


def test_dev_is_one_broker():
    (kafka,) = objects("dev", "Kafka")
    assert brokers("dev") == 1 and kafka["spec"]["kafka"]["config"]["offsets.topic.replication.factor"] == 1
    assert {t["spec"]["replicas"] for t in objects("dev", "KafkaTopic")} == {1}


def gpus(template: dict[str, Any]) -> int:
    return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in containers(template))


def test_only_prod_has_a_gpu_worker_group_for_the_learner():
    assert all(gpus(t) == 0 for _, t in pod_templates("dev"))
    groups = rayservice("prod")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (gpu,) = [g for g in groups if gpus(g["template"])]
    spec = gpu["template"]["spec"]
    assert gpus(gpu["template"]) == 1 and (spec.get("nodeSelector") or spec.get("tolerations"))
    assert re.search(r"-cu\d+$", spec["containers"][0]["image"]), "the GPU group needs the CUDA build"
    assert rayservice("prod")["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_limits_and_the_http_ones_have_probes(overlay):
    for where, template in pod_templates(overlay):
        for c in containers(template):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {c['name']} {kind}"
            if c.get("ports"):
                assert c.get("livenessProbe") and c.get("readinessProbe"), f"{where} {c['name']}"
            if any(p["containerPort"] == 8000 for p in c.get("ports", [])) and "head" not in where:
                # Ready = the API answers with a model loaded; the head can't wait for that (KubeRay
                # deploys the Serve app only once the head is ready), so it uses Ray's own health.
                assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}, where
    cluster = rayservice(overlay)["spec"]["rayClusterConfig"]
    if cluster.get("enableInTreeAutoscaling"):
        assert cluster["autoscalerOptions"]["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_in_the_manifests(overlay):
    docs = render(overlay)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == []
    for cm in objects(overlay, "ConfigMap"):
        assert SECRET_ENV.isdisjoint(cm.get("data", {})), cm["metadata"]["name"]
    for where, template in pod_templates(overlay):
        for c in containers(template):
            literal = {e["name"] for e in c.get("env", []) if "value" in e}
            assert SECRET_ENV.isdisjoint(literal), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_the_manifests_set_exists(overlay):
    known = {f"STREAMCL_{name.upper()}" for cls in SETTINGS for name in cls.model_fields}
    names = {k for k in config(overlay) if k.startswith("STREAMCL_")}
    names |= {e["name"] for _, t in pod_templates(overlay) for c in containers(t) for e in c.get("env", [])}
    assert {n for n in names if n.startswith("STREAMCL_")} - known == set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_the_metrics_port_of_the_head(overlay):
    monitors = objects(overlay, "PodMonitor") + objects(overlay, "ServiceMonitor")
    assert monitors
    metrics_port = ServeSettings.model_fields["metrics_port"].default
    assert int(config(overlay)["STREAMCL_METRICS_PORT"]) == metrics_port
    assert config(overlay)["STREAMCL_METRICS_HOST"] == "0.0.0.0"
    for m in objects(overlay, "PodMonitor"):
        selector, endpoints = m["spec"]["selector"], m["spec"]["podMetricsEndpoints"]
        assert selector["matchLabels"] and endpoints
        ((where, head),) = [(w, t) for w, t in pod_templates(overlay) if selects(selector, t["metadata"]["labels"])]
        assert where == "RayService head"
        ports = {p["name"]: p["containerPort"] for c in containers(head) for p in c.get("ports", [])}
        for e in endpoints:
            assert ports[e["port"]] == metrics_port and e.get("path", "/metrics") == "/metrics"
    (rule,) = objects(overlay, "PrometheusRule")
    assert rule["spec"]["groups"] and all(g["rules"] for g in rule["spec"]["groups"])
    dashboards = [cm for cm in objects(overlay, "ConfigMap") if cm["metadata"]["labels"].get("grafana_dashboard")]
    assert len(dashboards) == len(list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_open_only_what_each_caller_needs(overlay):
    policies = objects(overlay, "NetworkPolicy")
    ingress = [p for p in policies if "Ingress" in p["spec"]["policyTypes"]]
    for where, template in pod_templates(overlay):
        assert any(selects(p["spec"]["podSelector"], template["metadata"]["labels"]) for p in ingress), where
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            assert rule.get("from"), f"{p['metadata']['name']} is open to every source"

    # The API to the ingress controller's namespace, the metrics to the monitoring namespace.
    head = dict(pod_templates(overlay))["RayService head"]["metadata"]["labels"]
    for port, namespace in ((8000, "ingress-nginx"), (9108, "monitoring")):
        sources = [
            src.get("namespaceSelector", {}).get("matchLabels")
            for p in policies
            if selects(p["spec"]["podSelector"], head)
            for rule in p["spec"].get("ingress", [])
            if any(x.get("port") == port for x in rule.get("ports", []))
            for src in rule["from"]
        ]
        assert {"kubernetes.io/metadata.name": namespace} in sources, port
