"""Registry integrity on S3 (issue 15, point 6): keys named in a version's metadata never make a
download or a delete leave the version's prefix or the local cache; signing works the same."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from learners.registry import NewVersion
from learners.registry.s3 import S3Registry
from streaming.errors import RegistryError

# the moto server and bucket fixtures of the S3 registry's unit tests (one module name per basename)
_spec = importlib.util.spec_from_file_location(
    "_s3_fixtures", Path(__file__).parents[1] / "unit" / "test_s3registry.py"
)
assert _spec is not None and _spec.loader is not None
_s3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_s3)
endpoint, bucket, make, write = _s3.endpoint, _s3.bucket, _s3.make, _s3.write

KEY = "s3k-P9oI8uY7tR6eW5qA4sD3fG2hJ1kL0zXcVbNm"  # random-looking: a placeholder is refused
PREFIX = "team/registry"


def _plant(bucket: str, reg: S3Registry, version: int, name: str, body: bytes) -> None:
    """Whoever can write the bucket: an object under a traversing name and meta.json listing it."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/versions/{version:06d}/{name}", Body=body)
    key = f"{PREFIX}/versions/{version:06d}/meta.json"
    meta = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    meta["files"][name] = hashlib.sha256(body).hexdigest()
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(meta).encode())


def test_s3_key_traversal_refused(make: Callable[..., S3Registry], bucket: str, tmp_path: Path) -> None:
    """A ``../`` name in an S3 version's meta.json made every replica write the object outside its cache."""
    reg = make()
    meta = reg.create(write(b"weights"), NewVersion())
    escape = "../../../../escaped.txt"
    _plant(bucket, reg, meta.version, escape, b"planted by the bucket's writer")
    reader = make()
    with pytest.raises(RegistryError):
        reader.local_path(meta.version)
    assert meta.version not in [m.version for m in reader.versions()] and meta.version in reader.unreadable
    assert not list(tmp_path.rglob("escaped.txt"))


def test_s3_drop_files_outside_refused(make: Callable[..., S3Registry], bucket: str) -> None:
    """``drop_files`` on S3 deleted keys outside the version's prefix (``../``) named by the caller."""
    reg = make()
    first = reg.create(write(b"one"), NewVersion())
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{PREFIX}/keep.txt", Body=b"x")
    with pytest.raises(RegistryError):
        reg.drop_files(first.version, ["../../keep.txt"])
    with pytest.raises(RegistryError):
        reg._delete_files(first.version, ["../../keep.txt"])
    assert boto3.client("s3").get_object(Bucket=bucket, Key=f"{PREFIX}/keep.txt")["Body"].read() == b"x"


def test_s3_nested_file_refused_before_a_number_is_taken(make: Callable[..., S3Registry]) -> None:
    """A version writer's subfolder became a file name with a separator in meta.json."""
    reg = make()

    def nested(folder: Path) -> None:
        (folder / "sub").mkdir()
        (folder / "sub" / "model.bin").write_bytes(b"x")

    with pytest.raises(RegistryError, match="refused file name"):
        reg.create(nested, NewVersion())
    assert reg.create(write(b"ok"), NewVersion()).version == 1


def test_s3_unsigned_version_refused_when_key_set(make: Callable[..., S3Registry], bucket: str, tmp_path: Path) -> None:
    """On S3 as locally: an unsigned version is refused by a reader with the key, a signed one loads."""
    unsigned = make().create(write(b"one"), NewVersion())
    signer = S3Registry(bucket, PREFIX, cache_dir=tmp_path / "signer", signing_key=KEY)
    signed = signer.create(write(b"two"), NewVersion(parent=unsigned.version))
    reader = S3Registry(bucket, PREFIX, cache_dir=tmp_path / "reader", signing_key=KEY)
    with pytest.raises(RegistryError, match="not signed"):
        reader.local_path(unsigned.version)
    assert (reader.local_path(signed.version) / "model.safetensors").read_bytes() == b"two"
    assert reader.update(signed.version, status="promoted").status == "promoted"
    assert [m.version for m in reader.versions()] == [signed.version] and reader.unreadable == {unsigned.version}


def _holdout_files(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "holdout.json").write_bytes(b'{"samples": {"d": [["a text", "pos"]]}}')


def test_s3_dropped_file_not_read_from_cache(make: Callable[..., S3Registry], bucket: str) -> None:
    """A file dropped (erasure) by one process stayed in another process's cache and was still read."""
    writer, replica = make(), make()
    meta = writer.create(_holdout_files, NewVersion())
    assert (replica.local_path(meta.version) / "holdout.json").exists()
    writer.drop_files(meta.version, ["holdout.json"])
    folder = replica.local_path(meta.version)
    assert not (folder / "holdout.json").exists() and (folder / "model.safetensors").read_bytes() == b"weights"


def test_s3_pruned_version_cache_removed(make: Callable[..., S3Registry], bucket: str) -> None:
    """A version pruned by another process kept its files (held-out texts included) in every other cache."""
    writer, replica = make(), make()
    first = writer.create(_holdout_files, NewVersion())
    second = writer.create(_holdout_files, NewVersion(parent=first.version))
    cached = replica.local_path(first.version)
    writer.set_serving(second.version)
    assert writer.prune(keep_last=1, keep=set()) == [first.version]
    replica.versions()
    assert not cached.exists()


def test_s3_added_file_not_served(make: Callable[..., S3Registry], bucket: str) -> None:
    """A file the manifest does not list, put in a cached version folder, was read by the loaders."""
    reg = make()
    meta = reg.create(write(b"weights"), NewVersion())
    folder = reg.local_path(meta.version)
    (folder / "added_tokens.json").write_text('{"evil": 1}')
    assert not (reg.local_path(meta.version) / "added_tokens.json").exists()
