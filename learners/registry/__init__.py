"""The model registry: numbered versions (integers that only grow), their typed metadata
(:class:`VersionMeta`; a small version names its base, :class:`BaseRef`), their lineage, and
the serving pointer (:class:`ServingState`).

Names from storage are checked before they reach a file system (``_names``); versions can be
signed (``STREAMCL_REGISTRY_SIGNING_KEY``, :class:`SigningSettings`). Backends:
:class:`LocalRegistry` (a directory) and ``S3Registry`` (``learners.registry.s3``, imported only
when an ``s3://`` URI is opened, so boto3 loads only then).
"""

from learners.registry._lease import PROCESS_OWNER, Lease, LeaseError
from learners.registry._meta import (
    BaseRef,
    GateFigures,
    GroupFigures,
    NewVersion,
    ServingState,
    VersionMeta,
    VersionMetrics,
    WriteFiles,
)
from learners.registry._open import open_registry, registry_for
from learners.registry._signing import SigningSettings
from learners.registry.base import LINEAGE_FILE, META_FILE, Registry, sha256
from learners.registry.local import LocalRegistry

__all__ = [
    "LINEAGE_FILE",
    "META_FILE",
    "PROCESS_OWNER",
    "BaseRef",
    "GateFigures",
    "GroupFigures",
    "Lease",
    "LeaseError",
    "LocalRegistry",
    "NewVersion",
    "Registry",
    "ServingState",
    "SigningSettings",
    "VersionMeta",
    "VersionMetrics",
    "WriteFiles",
    "open_registry",
    "registry_for",
    "sha256",
]
