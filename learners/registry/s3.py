"""The model registry on S3-compatible object storage (AWS S3, MinIO, Ceph…): the layout of
:class:`~learners.registry.local.LocalRegistry` under ``s3://bucket/prefix``.

A version becomes visible when its ``meta.json`` exists, and that is uploaded after its files,
so a reader sees a whole version or none. Its number is taken with a create-only write
(``If-None-Match: *``) of a claim object, so writers on several machines never share a number,
and numbers only grow. Credentials, region and endpoint come from the standard AWS environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``), which boto3 reads itself; ``AWS_REGION`` is
read here because boto3 does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.exceptions import ClientError
from pydantic import BaseModel, SecretStr

from learners.registry._bases import based
from learners.registry._meta import NewVersion, ServingState, VersionMeta, WriteFiles
from learners.registry._names import check_name, check_names, inside, version_folder, version_of_folder
from learners.registry._pointer import SERVING_BACKUP
from learners.registry._s3cache import CACHE_FILE, Stamps, cached_ok, drop_folders, keep_only, read_record
from learners.registry._s3cache import etag as _etag
from learners.registry._s3errors import MISSING, TAKEN, code, s3_errors
from learners.registry._signing import signer_for
from learners.registry.base import (
    AUDIT_PREFIX,
    COUNTER_FILE,
    KEPT_FILES,
    LINEAGE_FILE,
    META_FILE,
    SERVING_FILE,
    Registry,
    sha256,
)
from streaming.errors import RegistryError
from streaming.files import write_json_atomic

CLAIM_FILE = ".claim"  # created with If-None-Match: *, so one writer owns the number
CONFLICT_RETRIES = 20
_Record = TypeVar("_Record", bound=BaseModel)


class S3Registry(Registry):
    """Versions under ``s3://bucket/prefix``; ``local_path`` downloads a version into ``cache_dir``
    (one folder per registry) and verifies it against the checksums in its metadata. With
    ``signing_key``, versions written are signed and versions read must be."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        cache_dir: str | Path | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        signing_key: SecretStr | str | None = None,
    ) -> None:
        self._signer = signer_for(signing_key)
        if not bucket:
            raise RegistryError("an S3 registry needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.region = region or os.environ.get("AWS_REGION") or None
        # retries (AWS_MAX_ATTEMPTS, AWS_RETRY_MODE) and the rest also come from the environment
        self._client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=self.region)
        self.endpoint_url = endpoint_url or str(self._client.meta.endpoint_url)
        if cache_dir is None:
            where = hashlib.sha256(f"{self.endpoint_url} {self.uri}".encode()).hexdigest()[:16]
            cache_dir = Path(tempfile.gettempdir()) / "streamcl-registry-cache" / where
        self.cache_dir = Path(cache_dir).expanduser().resolve()
        self._lock = threading.Lock()
        self._metas: dict[str, tuple[str, bytes]] = {}  # meta.json key -> (ETag, body): unchanged ones are not read
        self._verified: Stamps = {}
        self._downloads: dict[int, threading.Lock] = {}

    # keys and errors --------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts) if self.prefix else parts)

    def _version_key(self, version: int, name: str = "") -> str:
        """The key of a version's file (a plain name: never a key outside the version's prefix)."""
        plain = name if name in ("", CLAIM_FILE) else check_name(name, version)  # the claim is our own name
        return self._key("versions", version_folder(version), plain)

    def _errors(self, doing: str, version: int | None = None) -> AbstractContextManager[None]:
        """Turn a failed S3 request into a RegistryError that says what failed (never with credentials)."""
        return s3_errors(self.uri, self.bucket, doing, version)

    def _get(self, key: str, doing: str, version: int | None = None) -> tuple[bytes, str] | None:
        """Body and ETag of an object, or None if it does not exist."""
        with self._errors(doing, version):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if code(exc) in MISSING:
                    return None
                raise
            return response["Body"].read(), str(response["ETag"])  # as sent: If-Match wants it quoted

    def _put_json(self, key: str, payload: Any, doing: str, version: int | None = None, **condition: str) -> bool:
        """Write JSON; with ``IfMatch``/``IfNoneMatch`` it is a compare-and-swap: False when the condition failed."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        with self._errors(doing, version):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
                )
            except ClientError as exc:
                if condition and code(exc) in TAKEN:
                    return False
                raise
        return True

    def _delete(self, keys: list[str], doing: str, version: int | None = None) -> None:
        """Delete objects, a thousand per request."""
        with self._errors(doing, version):
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[start : start + 1000]]
                result = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
                for failed in result.get("Errors", [])[:1]:
                    raise RegistryError(f"{self.uri}: {doing}: {failed.get('Key')}: {failed.get('Code')}", version)

    def _list(self, prefix: str, doing: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        """Objects (and, with a delimiter, ``{"Prefix": …}`` folders) under ``prefix``, every page."""
        extra = {"Delimiter": delimiter} if delimiter else {}
        with self._errors(doing):
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, **extra
            ):
                yield from page.get("CommonPrefixes", [])
                yield from page.get("Contents", [])

    # numbering --------------------------------------------------------------------------------
    def _claim_version(self) -> int:
        """Take the next number: above the counter and every claimed version, by a create-only write."""
        base = self._key("versions") + "/"
        claimed = [
            int(name)
            for item in self._list(base, "listing versions", delimiter="/")
            if (name := item.get("Prefix", "")[len(base) :].rstrip("/")) and version_of_folder(name)
        ]
        found = self._get(self._key(COUNTER_FILE), "reading the version counter")
        counter = int(json.loads(found[0]).get("next_version", 1)) if found else 1
        version = max([counter, *(v + 1 for v in claimed)])
        with self._errors("claiming a version number", version):
            while True:
                try:
                    self._client.put_object(
                        Bucket=self.bucket, Key=self._version_key(version, CLAIM_FILE), Body=b"", IfNoneMatch="*"
                    )
                    break
                except ClientError as exc:
                    if code(exc) not in TAKEN:
                        raise
                    version += 1  # another writer owns it
        self._advance_counter(version + 1)
        return version

    def _advance_counter(self, next_version: int) -> None:
        """Raise ``registry.json`` to ``next_version``, never lower it (compare-and-swap on its ETag)."""
        key = self._key(COUNTER_FILE)
        for _ in range(CONFLICT_RETRIES):
            found = self._get(key, "reading the version counter")
            if found and int(json.loads(found[0]).get("next_version", 1)) >= next_version:
                return
            condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
            if self._put_json(key, {"next_version": next_version}, "writing the version counter", None, **condition):
                return
            # another writer moved it: read again
        # the claims, not the counter, keep numbers unique: a counter left behind only costs retries

    # versions ---------------------------------------------------------------------------------
    def create(self, write_files: WriteFiles, new: NewVersion) -> VersionMeta:
        with tempfile.TemporaryDirectory(prefix="streamcl-version-") as tmp:
            folder = Path(tmp)
            new = based(self, folder, self._completed(write_files(folder), new))  # a failure here claims no number
            paths = {
                p.relative_to(folder).as_posix(): p
                for p in sorted(folder.rglob("*"))
                if p.is_file() and p.relative_to(folder).as_posix() != META_FILE
            }
            check_names(paths)  # plain names only (no subfolders), before a number is taken
            files = {name: sha256(p) for name, p in paths.items()}
            version = self._claim_version()
            full = self._full_meta(version, new, files)
            uploaded: list[str] = []
            try:
                for name, path in paths.items():
                    key = self._version_key(version, name)
                    with self._errors(f"uploading {name} of version {version}", version):
                        self._client.upload_file(str(path), self.bucket, key)
                    uploaded.append(key)
                # meta.json last: it publishes the version
                if not self._put_json(
                    self._version_key(version, META_FILE),
                    full.to_json(),
                    f"publishing version {version}",
                    version,
                    IfNoneMatch="*",
                ):
                    raise RegistryError(f"version {version} was published by another writer", version)
            except BaseException:
                try:
                    self._delete(uploaded, f"cleaning up version {version}", version)
                except RegistryError:
                    pass  # leftovers are unreferenced: without meta.json there is no version
                raise  # the claim stays: the number is never given out again
        return full

    def versions(self) -> list[VersionMeta]:
        base = self._key("versions") + "/"
        metas: dict[int, tuple[str, str]] = {}
        for item in self._list(base, "listing versions"):
            folder, _, name = item.get("Key", "")[len(base) :].partition("/")
            if (version := version_of_folder(folder)) is not None and name == META_FILE:
                metas[version] = (item["Key"], _etag(item["ETag"]))
        out, unreadable = [], {}
        for version, (key, etag) in sorted(metas.items()):
            with self._lock:
                cached = self._metas.get(key)
            if cached is None or _etag(cached[0]) != etag:
                found = self._get(key, f"reading the metadata of version {version}", version)
                if found is None:
                    continue  # deleted since the listing
                cached = (found[1], found[0])
                with self._lock:
                    self._metas[key] = cached
            try:
                out.append(self._trusted(VersionMeta.parse(cached[1], version), version))
            except RegistryError as exc:  # corrupt, unsafe or unsigned: the version is not listed
                unreadable[version] = str(exc)
        live = {m.version for m in out if not m.pruned}  # the copies of the others are not read again
        drop_folders(self.cache_dir / "versions", live, max(metas, default=0))
        return self._listed(out, unreadable)

    def _read_meta(self, version: int) -> tuple[VersionMeta, str]:
        found = self._get(self._version_key(version, META_FILE), f"reading version {version}", version)
        if found is None:
            raise RegistryError(f"version {version} does not exist", version)
        return self._trusted(VersionMeta.parse(found[0], version), version), found[1]

    def meta(self, version: int) -> VersionMeta:
        return self._read_meta(version)[0]

    def update(self, version: int, **changes: Any) -> VersionMeta:
        key = self._version_key(version, META_FILE)
        for _ in range(CONFLICT_RETRIES):
            meta, etag = self._read_meta(version)
            meta = self._sealed(meta.changed(**changes))
            if self._put_json(key, meta.to_json(), f"updating version {version}", version, IfMatch=etag):
                return meta
            # changed by another writer since the read: merge again
        raise RegistryError(f"version {version}: its metadata kept changing during the update", version)

    # local copies -----------------------------------------------------------------------------
    def local_path(self, version: int) -> Path:
        meta = self._loadable(version)
        with self._lock:
            lock = self._downloads.setdefault(version, threading.Lock())
        with lock:
            base = self._version_key(version)
            remote = {
                item["Key"][len(base) :]: _etag(item["ETag"])
                for item in self._list(base, f"listing the files of version {version}")
                if "Key" in item
            }
            folder = self.cache_dir / "versions" / version_folder(version)
            folder.mkdir(parents=True, exist_ok=True)
            keep_only(folder, meta.files)  # nothing dropped, pruned or added stays readable
            record = {k: v for k, v in read_record(folder).items() if k in meta.files}
            changed = False
            for name, digest in meta.files.items():
                etag = remote.get(name)
                if etag is None:
                    raise RegistryError(f"version {version}: {name} is missing", version)
                path = inside(folder, name, version)
                # the object is trusted only at the ETag it was verified at: a rewritten object is
                # downloaded and checked again, so the cache never hides a change in the bucket
                if record.get(name) == etag and cached_ok(self._verified, path, digest, etag):
                    continue
                record[name] = self._download(version, name, path, digest)
                changed = True
            if changed:
                write_json_atomic(folder / CACHE_FILE, record)
        return folder

    def _download(self, version: int, name: str, path: Path, digest: str) -> str:
        """Fetch one file beside ``path``, check it, then rename it into place; returns its ETag."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f, self._errors(f"downloading {name} of version {version}", version):
                try:
                    response = self._client.get_object(Bucket=self.bucket, Key=self._version_key(version, name))
                except ClientError as exc:
                    if code(exc) in MISSING:
                        raise RegistryError(f"version {version}: {name} is missing", version) from None
                    raise
                etag = _etag(response["ETag"])
                for chunk in response["Body"].iter_chunks(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
            if h.hexdigest() != digest:
                raise RegistryError(f"version {version}: {name} is missing or corrupt (checksum)", version)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        st = path.stat()
        self._verified[path] = (digest, etag, st.st_size, st.st_mtime_ns, st.st_ino)
        return etag

    def lineage(self, version: int) -> dict[str, Any] | None:
        key = self._version_key(version, LINEAGE_FILE)
        found = self._get(key, f"reading the lineage of version {version}", version)
        return self._lineage_of(version, found[0]) if found is not None else None

    # audit trail: S3 cannot append, so one object per record, named in the order written -------
    def append_audit(self, record: dict[str, Any]) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
        self._put_json(self._key(AUDIT_PREFIX, name), record, "writing an audit record")

    def _audit_lines(self) -> list[bytes]:
        doing = "reading the audit trail"
        keys = sorted(o["Key"] for o in self._list(self._key(AUDIT_PREFIX) + "/", doing) if "Key" in o)
        return [found[0] for key in keys if (found := self._get(key, doing)) is not None]

    # serving pointer and deletion -------------------------------------------------------------
    def _read_pointer(self, name: str) -> bytes | None:
        found = self._get(self._key(check_name(name)), f"reading {name}")
        return found[0] if found is not None else None

    def _write_pointer(self, name: str, payload: dict[str, Any]) -> None:
        self._put_json(self._key(check_name(name)), payload, f"writing {name}")

    def _change_serving(self, change: Callable[[ServingState], ServingState]) -> ServingState:
        """Compare-and-swap on ``serving.json``'s ETag: a concurrent writer's change is read
        and ``change`` decided again on it (never written back over it)."""
        key = self._key(SERVING_FILE)
        for _ in range(CONFLICT_RETRIES):
            found = self._get(key, f"reading {SERVING_FILE}")
            current = self._decode_serving(found[0]) if found is not None else None
            state = change(current if current is not None else self.read_serving().state)
            self._put_json(self._key(SERVING_BACKUP), self._pointer_body(state), f"writing {SERVING_BACKUP}")
            condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
            if self._put_json(key, self._pointer_body(state), f"writing {SERVING_FILE}", None, **condition):
                return state
        raise RegistryError(f"{self.uri}: {SERVING_FILE} kept changing during the update")

    def _swap_pointer(self, name: str, change: Callable[[bytes | None], _Record]) -> _Record:
        key = self._key(check_name(name))
        for _ in range(CONFLICT_RETRIES):
            found = self._get(key, f"reading {name}")
            record = change(found[0] if found is not None else None)
            condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
            if self._put_json(key, record.model_dump(), f"writing {name}", None, **condition):
                return record
            # another writer changed it since the read: decide again on what it wrote
        raise RegistryError(f"{self.uri}: {name} kept changing during the update")

    def _delete_files(self, version: int, names: list[str] | None) -> None:
        base = self._version_key(version)
        folder = self.cache_dir / "versions" / version_folder(version)
        if names is None:
            keys = [
                item["Key"]
                for item in self._list(base, f"listing the files of version {version}")
                if "Key" in item and item["Key"][len(base) :] not in KEPT_FILES | {CLAIM_FILE}
            ]
            self._delete(keys, f"deleting the files of version {version}", version)
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self._verified = {p: s for p, s in self._verified.items() if folder not in p.parents}
            return
        self._delete([self._version_key(version, n) for n in names], f"deleting files of version {version}", version)
        for name in names:
            inside(folder, name, version).unlink(missing_ok=True)


__all__ = ["S3Registry"]
