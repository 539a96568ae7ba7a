"""Teach schemathesis the one rule of the API that JSON Schema cannot state: a predict request's
``ids`` and ``domains`` have one entry per text. Right before a valid (positive) case is sent,
in every phase (the stateful one reuses values of earlier calls), its lists get the right
length; invalid cases go as generated. Loaded by ``schemathesis.toml`` beside this file."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    body = case.body
    positive = case.meta is None or case.meta.generation.mode.is_positive
    if not (positive and case.operation.path.endswith("/predict") and isinstance(body, dict)):
        return
    texts = body.get("texts")
    if isinstance(texts, list):
        for key, fill in (("ids", lambda i: f"id-{i}"), ("domains", lambda i: None)):
            value = body.get(key)
            if isinstance(value, list) and len(value) != len(texts):
                body[key] = (value + [fill(i) for i in range(len(value), len(texts))])[: len(texts)]
