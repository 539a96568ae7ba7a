"""``streamcl forget ID…`` (erasure by id, over HTTP with the admin token) and ``streamcl model
history`` (the audit trail, read from the model's registry)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_forget", "cmd_forget", "cmd_history"]


def cmd_forget(args: argparse.Namespace) -> int:
    """POST /v1/forget (or /v1/models/NAME/forget) with ``STREAMCL_ADMIN_TOKEN``; prints the answer."""
    from services.client import ApiCallError, Client
    from services.settings import ServeSettings

    serve = ServeSettings()
    url = args.url or os.environ.get("STREAMCL_API_URL") or f"http://{serve.host}:{serve.port}"
    token = serve.admin_token.get_secret_value() if serve.admin_token else None
    if token is None:
        print("streamcl: forget needs the admin token (STREAMCL_ADMIN_TOKEN)", file=sys.stderr)
        return 2
    try:
        out = Client(url, None, token).forget(args.ids, model=args.model)
    except ApiCallError as exc:
        print(f"streamcl: {exc.status} {exc.error}: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print the audit trail of the model's registry (oldest first, newest last)."""
    from learners.registry import registry_for
    from learners.settings import LearnerSettings
    from services.audit import history_table, read_history
    from services.models import model_specs
    from services.settings import PlatformSettings
    from streaming.settings import StreamSettings

    specs = model_specs(StreamSettings(), LearnerSettings(), PlatformSettings().models)
    spec = next((s for s in specs if s.name == args.model), None) if args.model else specs[0]
    if spec is None:
        print(f"streamcl: no model {args.model!r}; models: {', '.join(s.name for s in specs)}", file=sys.stderr)
        return 2
    records: list[dict[str, Any]] = read_history(registry_for(spec.stream, spec.learner), args.model)
    print(json.dumps(records, indent=2) if args.json else history_table(records))
    return 0


def add_forget(sub: Any) -> None:
    """The ``forget`` subcommand."""
    fg = sub.add_parser("forget", help="erase the texts of example ids (admin token, STREAMCL_ADMIN_TOKEN)")
    fg.add_argument("ids", nargs="+", metavar="ID", help="example ids (at most 1000)")
    fg.add_argument("--model", metavar="NAME", help="a named model (STREAMCL_MODELS); default: the default model")
    fg.add_argument("--url", help="API URL (default http://STREAMCL_HOST:STREAMCL_PORT or STREAMCL_API_URL)")
    fg.set_defaults(func=cmd_forget)
