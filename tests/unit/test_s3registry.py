"""The S3 registry against a real S3 API: moto's server on a free local port, reached through
``AWS_ENDPOINT_URL`` with dummy credentials, a fresh bucket per test."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from learners.registry import NewVersion, ServingState, open_registry
from learners.registry.s3 import S3Registry
from streaming.errors import RegistryError

TEXTS = ["great service, thank you", "the worst delay ever"]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    # moto checks If-None-Match / If-Match and then stores, in two steps; S3 does both at once.
    # One put at a time makes the fake as atomic as the real store for the concurrency test.
    put = S3Response.put_object
    lock = threading.Lock()

    def atomic_put(self: S3Response) -> Any:
        with lock:
            return put(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S3Response, "put_object", atomic_put)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new bucket, with the environment a deployment gives (credentials and endpoint)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    name = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def make(bucket: str, tmp_path: Path) -> Callable[..., S3Registry]:
    """Registry objects on the test bucket, each with its own cache (as on separate machines)."""

    def registry(prefix: str = "team/registry") -> S3Registry:
        return S3Registry(bucket, prefix, cache_dir=tmp_path / f"cache-{uuid.uuid4().hex[:8]}")

    return registry


def write(content: bytes) -> Callable[[Path], None]:
    def files(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(content)

    return files


def keys(bucket: str, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_versions_only_grow_and_keep_lineage(make: Callable[..., S3Registry], bucket: str) -> None:
    reg = make()
    assert reg.latest() is None and reg.serving() is None and reg.versions() == []

    def with_lineage(folder):
        write(b"one")(folder)
        (folder / "lineage.json").write_text('{"trained": ["a"]}')

    v1 = reg.create(with_lineage, NewVersion(parent=None))
    v2 = reg.create(write(b"two"), NewVersion(parent=1))
    v3 = reg.create(write(b"three"), NewVersion(parent=2))
    assert [v1.version, v2.version, v3.version] == [1, 2, 3]
    assert v3.status == "candidate" and v3.uri == f"s3://{bucket}/team/registry/versions/000003"
    assert reg.meta(2).parent == 1 and reg.meta(3).files == v3.files
    assert "team/registry/versions/000001/meta.json" in keys(bucket, "team/registry/versions/000001/")
    reg.set_serving(1)
    assert reg.prune(keep_last=1, keep={1}) == [2]
    assert reg.meta(2).pruned is True and reg.meta(2).files == {} and reg.meta(2).parent == 1
    assert keys(bucket, "team/registry/versions/000002/model") == []  # the files went, the metadata stayed
    assert reg.prune(keep_last=1, keep=set()) == [1]
    assert reg.lineage(1) == {"trained": ["a"]} and reg.lineage(3) is None  # what it consumed stays
    with pytest.raises(RegistryError, match="pruned"):
        reg.local_path(2)
    # a new registry object (another machine) continues the numbering
    assert make().create(write(b"four"), NewVersion()).version == 4
    assert [m.version for m in reg.versions()] == [1, 2, 3, 4]
    assert reg.latest().version == 4  # type: ignore[union-attr]
    # another prefix in the same bucket is another registry
    assert make("other").create(write(b"x"), NewVersion()).version == 1


def test_metadata_updates_and_serving_pointer(make: Callable[..., S3Registry]) -> None:
    reg = make()
    for content in (b"a", b"b", b"c"):
        reg.create(write(content), NewVersion())
    assert reg.serving_state() == ServingState()
    with pytest.raises(RegistryError, match="nothing is serving"):
        reg.set_pinned(True)
    reg.set_serving(1)
    reg.set_serving(2, floor=2)
    state = reg.set_serving(3, pinned=True)
    assert state.version == 3 and state.history == [1, 2] and state.pinned is True and state.floor == 2
    other = make()
    assert other.serving() == 3 and other.serving_state().history == [1, 2]
    assert other.set_pinned(False).pinned is False and reg.serving_state().pinned is False
    assert reg.update(2, status="rejected", reason="gate").status == "rejected"
    assert other.meta(2).reason == "gate" and other.meta(2).version == 2
    assert [m.status for m in other.versions()] == ["candidate", "rejected", "candidate"]


def test_corrupt_objects_are_detected_despite_the_cache(make: Callable[..., S3Registry], bucket: str) -> None:
    reg = make()
    meta = reg.create(write(b"weights"), NewVersion())
    folder = reg.local_path(meta.version)
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    # a local copy that changed is fetched again: the cache heals, the bucket is the truth
    (folder / "model.safetensors").write_bytes(b"tampered locally")
    assert (reg.local_path(meta.version) / "model.safetensors").read_bytes() == b"weights"
    # an object rewritten in the bucket is not hidden by the good copy in the cache
    key = "team/registry/versions/000001/model.safetensors"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"tampered")
    with pytest.raises(RegistryError, match=r"model\.safetensors .*corrupt \(checksum\)"):
        reg.local_path(meta.version)
    with pytest.raises(RegistryError, match="corrupt"):
        make().local_path(meta.version)
    boto3.client("s3").delete_object(Bucket=bucket, Key=key)
    with pytest.raises(RegistryError, match="missing"):
        reg.local_path(meta.version)


def test_failed_write_leaves_no_version(make: Callable[..., S3Registry], bucket: str) -> None:
    reg = make()

    def boom(folder: Path) -> None:
        (folder / "half").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        reg.create(boom, NewVersion())
    assert reg.versions() == [] and keys(bucket, "") == []
    assert reg.create(write(b"one"), NewVersion()).version == 1


def test_unknown_versions_schemes_and_s3_errors(
    make: Callable[..., S3Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = make()
    with pytest.raises(RegistryError, match="does not exist"):
        reg.meta(7)
    with pytest.raises(RegistryError):
        reg.set_serving(7)
    with pytest.raises(RegistryError):
        reg.local_path(7)
    opened = open_registry("s3://some-bucket/some/prefix")
    assert isinstance(opened, S3Registry) and opened.uri == "s3://some-bucket/some/prefix"
    assert opened.version_uri(5) == "s3://some-bucket/some/prefix/versions/000005"
    with pytest.raises(RegistryError, match="bucket"):
        open_registry("s3:///prefix-without-bucket")
    with pytest.raises(RegistryError, match=r"unsupported.*s3://"):
        open_registry("gopher://x/y")
    with pytest.raises(RegistryError, match="does not exist") as missing:
        S3Registry(f"absent-{uuid.uuid4().hex[:8]}", "p").versions()
    assert "testing-secret" not in str(missing.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(RegistryError, match=r"127\.0\.0\.1:9") as unreachable:
        S3Registry("b", "p").serving_state()
    assert "another-secret" not in str(unreachable.value)


def test_concurrent_writers_never_share_a_number(make: Callable[..., S3Registry]) -> None:
    registries = [make(), make()]
    made: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(reg: S3Registry, n: int) -> None:
        start.wait()
        try:
            for i in range(3):
                made.append(reg.create(write(f"{n}-{i}".encode()), NewVersion(writer=n)).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(registries[n % 2], n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(made) == sorted(set(made)) and len(made) == 24
    assert [m.version for m in registries[0].versions()] == sorted(made)
    assert registries[1].create(write(b"after"), NewVersion()).version > max(made)


def test_a_saved_classifier_loads_back_from_the_bucket(make: Callable[..., S3Registry]) -> None:
    from learners.model import TextClassifier

    model = TextClassifier.from_encoder(None, ["a", "b"], 16)
    reg = make()
    meta = reg.create(model.save, NewVersion(parent=None))
    assert "model.safetensors" in meta.files
    again = TextClassifier.load(make().local_path(meta.version))
    a, b = model.predict(TEXTS), again.predict(TEXTS)
    assert again.labels == ["a", "b"] and [p.label for p in a] == [p.label for p in b]
    assert all(abs(x.scores[k] - y.scores[k]) < 1e-5 for x, y in zip(a, b) for k in x.scores)


def test_dropped_files_go_from_the_bucket_and_the_cache(make: Callable[..., S3Registry], bucket: str) -> None:
    reg = make()

    def files(folder: Path) -> None:
        write(b"weights")(folder)
        (folder / "replay.json").write_text("[]")

    reg.create(files, NewVersion(parent=None))
    assert (reg.local_path(1) / "replay.json").exists()  # cached
    meta = reg.drop_files(1, ["replay.json"])
    assert meta.dropped == ["replay.json"] and set(meta.files) == {"model.safetensors"}
    assert keys(bucket, "team/registry/versions/000001/replay") == []
    folder = reg.local_path(1)
    assert not (folder / "replay.json").exists() and (folder / "model.safetensors").read_bytes() == b"weights"


def test_lease_and_lost_pointer_on_s3(make: Callable[..., S3Registry]) -> None:
    from learners.registry import LeaseError

    reg, other = make(), make()
    lease = reg.acquire_lease("a", ttl_s=20, now=100.0)
    with pytest.raises(LeaseError):
        other.acquire_lease("b", ttl_s=20, now=110.0)
    assert other.acquire_lease("b", ttl_s=20, now=121.0).epoch == 2
    with pytest.raises(LeaseError):
        reg.renew_lease(lease, ttl_s=20, now=122.0)
    for status in ("promoted", "promoted", "candidate"):
        reg.create(write(b"x"), NewVersion(status=status))
    reg.set_serving(1)
    reg.set_serving(2, pinned=True)
    boto3.client("s3").put_object(Bucket=reg.bucket, Key=reg._key("serving.json"), Body=b"{")
    read = other.read_serving()
    assert (read.problem, read.source, read.state.version, read.state.pinned) == ("corrupt", "backup", 2, True)
    assert other.repair_serving().problem == "corrupt" and reg.read_serving().problem is None


def test_pointer_updates_are_compare_and_swap(make: Callable[..., S3Registry]) -> None:
    controller, operator = make(), make()
    for parent in (None, 1, 2):
        controller.create(write(b"w"), NewVersion(parent=parent))
    controller.set_serving(1)
    seen: list[ServingState] = []

    def promote(state: ServingState) -> ServingState:
        seen.append(state)
        if len(seen) == 1:
            operator.set_pinned(True)  # another process changes the pointer between the read and the write
        return state.model_copy(update={"version": 2, "history": [*state.history, 1]})

    state = controller._change_serving(promote)
    assert len(seen) == 2 and not seen[0].pinned and seen[1].pinned  # decided again on what the other wrote
    assert state.version == 2 and state.pinned  # the operator's pin is not written over
    assert operator.serving_state() == state and operator.read_serving().problem is None
