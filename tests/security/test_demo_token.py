"""``streamcl up --demo`` under authentication (issue 15, point 1): the demo finds a token that may
predict and send feedback, or the start is refused with a reason."""

from __future__ import annotations

import json

import pytest

from services.cli import demo_token
from services.settings import ServeSettings
from streaming.errors import ConfigError

API = "api-R5tY8uI1oP4aS7dF0gH3jK6lZ9xC2vB"
ADMIN = "adm-N2mQ5wE8rT1yU4iO7pA0sD3fG6hJ9kL"
SHOP = "shp-B7nM0qW3eR6tY9uI2oP5aS8dF1gH4jK"
TOOL = "tol-C4vB7nM0qW3eR6tY9uI2oP5aS8dF1gH"
BOTH = "bth-K1lZ4xC7vB0nM3qW6eR9tY2uI5oP8aS"


def _tokens(tmp_path, **entries):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({name: {"token": t, "roles": r} for name, (t, r) in entries.items()}))
    return path


def test_demo_uses_a_tokens_file_entry_with_predict_and_feedback(tmp_path):
    """The demo sent only STREAMCL_API_TOKEN: with tokens from a file, every call it made was refused."""
    tokens = _tokens(
        tmp_path, shop=(SHOP, ["predict"]), tool=(TOOL, ["feedback"]), both=(BOTH, ["predict", "feedback"])
    )
    assert demo_token(ServeSettings(admin_token=ADMIN, tokens_file=tokens)) == BOTH
    assert demo_token(ServeSettings(api_token=API, tokens_file=tokens)) == API
    assert demo_token(ServeSettings()) is None  # no token: the loopback API is open


def test_demo_refuses_to_start_without_a_token_that_may_predict_and_teach(tmp_path):
    """With only an admin token (or narrower tokens) the demo ran and every call got 401/403."""
    with pytest.raises(ConfigError, match="STREAMCL_API_TOKEN"):
        demo_token(ServeSettings(admin_token=ADMIN))
    narrow = _tokens(tmp_path, shop=(SHOP, ["predict"]), tool=(TOOL, ["feedback"]))
    with pytest.raises(ConfigError, match="predict and feedback"):
        demo_token(ServeSettings(tokens_file=narrow))
