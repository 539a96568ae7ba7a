"""The API's request and response bodies. The OpenAPI document is generated from these models,
and the limits in it (texts per request, characters per text) come from the settings, so the
document says what the server accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StringConstraints,
    Tag,
    create_model,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from learners.registry import VersionMeta
from streaming.events import MAX_DOMAIN_CHARS, MAX_LABEL_CHARS, Timestamp, now

#: A string with a character that is not blank: blank is whitespace to Python's ``str.strip``
#: (``\s`` with ``\x1c-\x1f``, ``\x85``) or to JSON Schema's regexes (``\s`` with ``\ufeff``),
#: so the document and the server agree whichever reads the pattern.
NON_BLANK = r"[^\s\x1c-\x1f\x85\ufeff]"
ID = Annotated[str, StringConstraints(min_length=1, max_length=256)]
#: A slice name: events carry at most 128 characters (longer ones would be dead-lettered).
DOMAIN = Annotated[str, StringConstraints(max_length=MAX_DOMAIN_CHARS)]


def _integral(value: Any) -> Any:
    """JSON Schema's integers include ``2.0``; strings and booleans stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


VERSION = Annotated[
    StrictInt, Field(ge=1, description="a version number (integers that only grow)"), BeforeValidator(_integral)
]


class _Request(BaseModel):
    """Request bodies: keys not listed are ignored, patterns read as Python's ``re`` does."""

    model_config = ConfigDict(extra="ignore", regex_engine="python-re")


class PredictRequest(_Request):
    """Texts to classify, with optional ids (else made up) and domains, one per text."""

    texts: list[str] = Field(description="the texts, each with a non-blank character")
    ids: list[ID] | None = Field(
        None, description="as many as texts: the id of each (the key feedback is joined on); default: made up"
    )
    domains: list[DOMAIN | None] | None = Field(
        None, description="as many as texts: the domain (a slice name) of each, or null"
    )

    @model_validator(mode="after")
    def _one_per_text(self) -> PredictRequest:
        for key in ("ids", "domains"):
            value = getattr(self, key)
            if value is not None and len(value) != len(self.texts):
                raise PydanticCustomError(
                    "invalid_request", "'{key}' must have one entry per text ({n})", {"key": key, "n": len(self.texts)}
                )
        return self


class FeedbackItem(_Request):
    """The true label of a text predicted (or published) earlier under ``id``."""

    id: ID
    label: Annotated[str, StringConstraints(max_length=MAX_LABEL_CHARS, pattern=NON_BLANK)] = Field(
        description="a class name"
    )
    ts: Timestamp = Field(default_factory=now, description="Unix seconds; default: now")


class VersionRequest(_Request):
    """An operator's target version; without one, the call picks (rollback: the previous one)."""

    version: VERSION | None = None


class PromoteRequest(VersionRequest):
    """The version to serve."""

    version: VERSION


@dataclass(frozen=True)
class RequestBodies:
    """The request bodies under this deployment's limits (the models routes are declared with)."""

    predict: type[PredictRequest]
    feedback: Any  # an Annotated union: one item or a list


def request_bodies(max_texts: int, max_chars: int) -> RequestBodies:
    """Request bodies whose schema carries the limits: ``max_texts`` texts (or feedback items)
    per request, ``max_chars`` characters per text."""
    text = Annotated[str, StringConstraints(max_length=max_chars, pattern=NON_BLANK)]
    texts = Annotated[list[text], Field(min_length=1, max_length=max_texts, description=f"1 to {max_texts} texts")]
    predict = create_model("PredictRequest", __base__=PredictRequest, texts=(texts, ...))
    predict.__doc__ = PredictRequest.__doc__
    items = Annotated[list[FeedbackItem], Field(min_length=1, max_length=max_texts)]
    feedback = Annotated[
        Annotated[FeedbackItem, Tag("item")] | Annotated[items, Tag("list")],
        Discriminator(lambda v: "list" if isinstance(v, list) else "item"),
    ]
    return RequestBodies(predict, feedback)


# responses ------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error: a code to act on and a sentence for people."""

    error: str = Field(description="what went wrong, as a code (unknown_model, too_many_texts, ...)")
    detail: str | None = Field(None, description="why, in words")


class Prediction(BaseModel):
    id: str
    label: str | None = Field(description="the top class (null while the model knows no label)")
    scores: dict[str, float] = Field(description="class -> probability")


class PredictResponse(BaseModel):
    model: str
    model_version: int = Field(description="the one version every prediction of this response comes from")
    predictions: list[Prediction]


class FeedbackAccepted(BaseModel):
    accepted: int = Field(description="feedback events queued for Kafka")


class PublicVersion(VersionMeta):
    """A version's ``meta.json`` as the API shows it (without the file checksums)."""

    files: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict, exclude=True)


class ListedVersion(PublicVersion):
    serving: bool = Field(description="whether the endpoint serves this version")


class ModelInfo(BaseModel):
    model: str
    serving: PublicVersion | None
    candidate: PublicVersion | None = Field(description="the newest candidate above the serving version")
    replica_version: int | None = Field(description="the version the answering replica serves")
    labels: list[str]


class VersionList(BaseModel):
    model: str
    serving: int | None
    versions: list[ListedVersion] = Field(description="every version, pruned ones and the start-up one included")


class AdminResult(BaseModel):
    serving: int | None = Field(description="the serving version after the call")
    pinned: bool
    history: list[int] = Field(description="earlier serving versions, newest last")


class ModelSummary(BaseModel):
    name: str
    default: bool = Field(description="the default model also answers on /v1/...")
    path: str
    topic_prefix: str
    replica_version: int | None
    labels: list[str]


class ModelList(BaseModel):
    models: list[ModelSummary]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    model_version: int = Field(description="the default model's version")
    models: dict[str, int] = Field(description="model -> the version this replica serves")
