"""The typed records of the registry: a version's ``meta.json`` and the ``serving.json`` pointer.

Each round-trips exactly: a record read from JSON is written back with the keys it was read
with (``to_json``), unknown keys included, so registries written by older code still load and
nothing an operator reads from ``meta.json`` disappears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from learners.registry._names import MAX_VERSION, check_names
from streaming.errors import RegistryError
from streaming.events import ModelStatus

__all__ = [
    "BaseRef",
    "GateFigures",
    "GroupFigures",
    "NewVersion",
    "ServingState",
    "VersionMeta",
    "VersionMetrics",
    "WriteFiles",
]


class _Record(BaseModel):
    """Frozen, keeps unknown keys, and dumps only the keys that were set (or read)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The JSON object as stored: the keys given or read, in JSON types."""
        return self.model_dump(exclude_unset=True)


class VersionMetrics(_Record):
    """What the learner measured when it wrote the version (open-ended: more keys are kept)."""

    examples_trained: int = 0
    prequential_accuracy: float | None = None
    prequential_domain_accuracy: dict[str, float] = Field(default_factory=dict)
    domain_accuracy: dict[str, float] = Field(default_factory=dict)
    domain_forgetting: dict[str, float] = Field(default_factory=dict)
    average_accuracy: float | None = None
    forgetting: float | None = None
    backward_transfer: float | None = None
    holdout_sizes: dict[str, int] = Field(default_factory=dict)


class GroupFigures(_Record):
    """The gate's accuracies on one group of its gate set."""

    n: int
    candidate: float
    serving: float


class GateFigures(_Record):
    """The figures of the decision that promoted or rejected the version: the gate's scores,
    the shadow's (``shadow_*``) and whether an operator decided."""

    gate_examples: int | None = None
    gate_accuracy: float | None = None
    gate_serving_accuracy: float | None = None
    gate_serving_version: int | None = None
    gate_groups: dict[str, GroupFigures] = Field(default_factory=dict)
    gate_seconds: float | None = None
    shadow_version: int | None = None
    shadow_texts: int | None = None
    shadow_compared: int | None = None
    shadow_labeled: int | None = None
    shadow_seconds: float | None = None
    shadow_agreement: float | None = None
    shadow_accuracy: float | None = None
    shadow_serving_accuracy: float | None = None
    shadow_error: str | None = None
    override: bool | None = None
    operator: bool | None = None


class BaseRef(_Record):
    """The base a small version's weights are a delta of: a full version of the same registry and
    the sha256 of its weights file (learners/_delta.py); signed with the rest of ``meta.json``."""

    version: int = Field(ge=1, le=MAX_VERSION)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class NewVersion(_Record):
    """What the writer of a version says about it; the registry adds the rest (:class:`VersionMeta`)."""

    model: str | None = None
    parent: int | None = None
    status: ModelStatus = "candidate"
    strategy: str | None = None
    base_model: str | None = None
    labels: list[str] = Field(default_factory=list)
    offsets: dict[str, int] = Field(default_factory=dict, description="topic:partition -> next offset to read")
    consumed: dict[str, int] = Field(default_factory=dict, description="lineage list -> ids in it, since the parent")
    metrics: VersionMetrics = Field(default_factory=VersionMetrics)
    state_files: list[str] = Field(default_factory=list, description="the learner's state among the files")
    note: str | None = None
    base: BaseRef | None = Field(None, description="a small version: the full version its weights are a delta of")

    @field_validator("state_files")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        return _checked(names)


class VersionMeta(NewVersion):
    """A stored version's ``meta.json``."""

    version: int = Field(ge=1, le=MAX_VERSION)
    uri: str
    created: float = 0.0
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    pruned: bool = False
    dropped: list[str] = Field(default_factory=list, description="state files deleted from an older version")
    reason: str | None = None
    gate: GateFigures | None = None
    signature: str | None = Field(None, description="HMAC-SHA256 of the manifest (learners/registry/_signing.py)")

    @field_validator("files")
    @classmethod
    def _plain_files(cls, files: dict[str, str]) -> dict[str, str]:
        _checked(files)
        return files

    @field_validator("dropped")
    @classmethod
    def _plain_dropped(cls, names: list[str]) -> list[str]:
        return _checked(names)

    @classmethod
    def parse(cls, raw: bytes | str, version: int | None = None) -> VersionMeta:
        """A ``meta.json`` read from storage; RegistryError when it is not one."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise RegistryError(f"version {version} has corrupt metadata: {_first(exc)}", version) from None

    def changed(self, **changes: Any) -> VersionMeta:
        """This metadata with ``changes`` applied (validated: a wrong value raises
        :class:`RegistryError`, which every caller of the registry already handles)."""
        try:
            return type(self).model_validate({**self.to_json(), **_plain(changes)})
        except ValidationError as exc:
            raise RegistryError(f"version {self.version}: refused change: {_first(exc)}", self.version) from None


#: Fills a new version's folder; may return the version's metadata completed from the files
#: (any other return value, such as a byte count, is ignored).
WriteFiles = Callable[[Path], object]


class ServingState(_Record):
    """``serving.json``: the version the endpoint serves, whether an operator pinned it, the
    earlier serving versions (newest last), and the floor (candidates at or below it are not
    promoted automatically)."""

    version: int | None = Field(None, ge=1, le=MAX_VERSION)
    pinned: bool = False
    history: list[Annotated[int, Field(ge=1, le=MAX_VERSION)]] = Field(default_factory=list, max_length=1000)
    floor: int = 0
    ts: float | None = None
    signature: str | None = Field(None, description="HMAC-SHA256 of the pointer, with a signing key")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _plain(changes: dict[str, Any]) -> dict[str, Any]:
    """Nested records as plain JSON values, so a merge validates them again."""
    return {k: v.to_json() if isinstance(v, _Record) else v for k, v in changes.items()}


def _checked(names: Iterable[str]) -> list[str]:
    """Plain file names only (learners/registry/_names.py), as a validation error of the record."""
    try:
        return check_names(names)
    except RegistryError as exc:
        raise ValueError(str(exc).removeprefix("version None: ")) from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))
