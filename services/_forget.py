"""An operator's erasure by id (``POST /v1/forget``, ``streamcl forget``), as the controller runs
it: every joiner of the model drops them from its pending state, then the model's learner takes
the ids' texts out of its replay buffers and held-out samples, remembers the ids as erased (never
trained again), writes a version without them and drops them from the older retained versions
(learners/erasure.py); the answer says which versions trained on them, so an operator can
decide to roll back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from learners.erasure import MAX_FORGET_IDS, MAX_ID_CHARS, trained_in
from learners.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["FORGET_BODY_BYTES", "FORGET_TIMEOUT_S", "Call", "ForgetRequest", "forget", "ray_calls"]

#: Seconds the learner has to apply an erasure (it writes a version) before the call fails.
FORGET_TIMEOUT_S = 300.0
#: A service's ``forget(ids)``, reached however the caller reaches it (a Ray actor, a test's object).
Call = Callable[[list[str]], dict[str, Any]]


def forget(ids: list[str], model: str, registry: Registry, learner: Call | None, joiners: list[Call]) -> dict[str, Any]:
    """Erase ``ids`` from every joiner, then from the learner (required): the joiners first, so
    no pending text of an id joins while the learner erases it, and always, whatever the learner
    answers. The answer reports each part; with no learner, or a learner that failed, it is an
    ``error`` with its HTTP ``status`` (503) that still lists what the joiners did."""
    answer: dict[str, Any] = {"model": model, "ids": len(ids), "joiners": []}
    for call in joiners:
        try:
            answer["joiners"].append(call(ids))
        except Exception as exc:  # reported: the operator sees which part kept the ids
            answer["joiners"].append({"error": f"{type(exc).__name__}: {exc}"})
    failed = sum("error" in j for j in answer["joiners"])
    done = f"{len(joiners) - failed} of {len(joiners)} joiners erased them"  # the HTTP answer has only the detail
    if learner is None:
        detail = f"model {model!r}: no learner to erase from ({done})"
        return {**answer, "error": "learner_unavailable", "status": 503, "detail": detail}
    try:
        answer["learner"] = learner(ids)
    except Exception as exc:
        log.error("erasure of %d ids: the learner failed: %s: %s", len(ids), type(exc).__name__, exc)
        detail = f"the learner did not erase: {type(exc).__name__} ({done}; call again to finish)"
        return {**answer, "error": "learner_unavailable", "status": 503, "detail": detail}
    answer["trained_in"] = trained_in(registry, ids)
    return answer


def ray_calls(model: str) -> tuple[Call | None, list[Call]]:
    """The ``forget`` calls of ``model``'s learner and joiners, found by their Ray actor names
    (a named model's actors carry its name: ``streamcl-learner-news``)."""
    import ray

    from streaming.runtime import NAMESPACE

    def find(role: str) -> Any:
        for name in (f"streamcl-{role}-{model}", f"streamcl-{role}"):
            try:
                return ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
        return None

    def call(actor: Any) -> Call:
        return lambda ids: dict(ray.get(actor.call.remote("forget", ids), timeout=FORGET_TIMEOUT_S))

    learner = find("learner")
    joiners = []
    for i in range(256):
        actor = find("joiner" if i == 0 else f"joiner-{i}")
        if actor is None:
            break
        joiners.append(call(actor))
    return (call(learner) if learner is not None else None), joiners


#: Ids an erasure accepts: no control character (JSON Schema's and Python's regexes agree on it).
ID_PATTERN = r"^(?![\s\S]*[\x00-\x1f\x7f])"
#: The largest ``POST /v1/forget`` body: 1000 ids of 256 characters, each escaped as ``\uXXXX``.
FORGET_BODY_BYTES = 2 * 1024 * 1024


class ForgetRequest(BaseModel):
    """``POST /v1/forget``: the ids whose texts streamcl must erase, for the model of the path.
    A ``model`` key, when sent, must name that model (422 otherwise: it is not in the document)."""

    model_config = ConfigDict(extra="ignore", regex_engine="python-re")

    ids: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]] = Field(
        min_length=1,
        max_length=MAX_FORGET_IDS,
        description=f"1 to {MAX_FORGET_IDS} example ids, each 1 to {MAX_ID_CHARS} characters, no control character",
    )
    model: SkipJsonSchema[str | None] = None
