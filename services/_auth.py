"""Bearer tokens with roles: who may predict, send feedback or act as an operator.

``STREAMCL_API_TOKEN`` grants ``predict`` and ``feedback``, ``STREAMCL_ADMIN_TOKEN`` grants
``admin``, and ``STREAMCL_TOKENS_FILE`` (a JSON object ``{"name": {"token": "...", "roles":
[...]}}``, a mounted Secret) adds named tokens with narrower roles; it is read again when it
changes, so tokens rotate without a restart. A token is never logged nor put in an error: only
its name is (the caller of :func:`caller`, for an audit trail).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streaming._secrets import MIN_SECRET_CHARS, check_secret
from streaming.errors import StreamclError

log = logging.getLogger("streamcl.auth")

Role = Literal["predict", "feedback", "admin"]
ROLES: tuple[Role, ...] = ("predict", "feedback", "admin")
#: The roles of every call but the operator's: a data token opens the read calls too.
DATA_ROLES: frozenset[str] = frozenset({"predict", "feedback"})
MIN_TOKEN_CHARS = MIN_SECRET_CHARS
ANONYMOUS = "anonymous"


def check_token(setting: str, value: str) -> None:
    """Raise ``ValueError`` naming ``setting`` (never the value) when ``value`` is empty, shorter
    than :data:`MIN_TOKEN_CHARS`, or looks like a placeholder (streaming/_secrets.py)."""
    check_secret(setting, value, MIN_TOKEN_CHARS)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Grant:
    """A token (kept as its SHA-256 only), its name and its roles."""

    name: str
    digest: bytes
    roles: frozenset[str]


def static_grants(api_token: str | None, admin_token: str | None) -> list[Grant]:
    """The grants of ``STREAMCL_API_TOKEN`` (named ``api``) and ``STREAMCL_ADMIN_TOKEN`` (``admin``)."""
    grants = []
    if api_token is not None:
        grants.append(Grant("api", _digest(api_token), DATA_ROLES))
    if admin_token is not None:
        grants.append(Grant("admin", _digest(admin_token), frozenset({"admin"})))
    return grants


def load_tokens_file(path: Path) -> list[Grant]:
    """The named tokens of ``path``; ``ValueError`` naming the file and the entry (never a token)."""
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"STREAMCL_TOKENS_FILE={path}: cannot read it as JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"STREAMCL_TOKENS_FILE={path}: expected an object name -> {{token, roles}}")
    if not raw:  # a Secret emptied by mistake must not read as "no tokens: open to all"
        raise ValueError(f"STREAMCL_TOKENS_FILE={path}: holds no token; remove the setting to run without one")
    grants, digests = [], set()
    for name, entry in raw.items():
        where = f"STREAMCL_TOKENS_FILE={path}: token {name!r}"
        token, roles = (entry.get("token"), entry.get("roles")) if isinstance(entry, dict) else (None, None)
        if not isinstance(token, str) or not isinstance(roles, list) or not roles:
            raise ValueError(f'{where}: expected {{"token": "...", "roles": [...]}}')
        check_token(where, token)
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"{where}: unknown roles {unknown}; roles are {', '.join(ROLES)}")
        grant = Grant(str(name), _digest(token), frozenset(roles))
        if grant.digest in digests:
            raise ValueError(f"{where}: the same token as another entry")
        digests.add(grant.digest)
        grants.append(grant)
    return grants


class Refused(StreamclError):
    """A call without a token (401) or with a wrong one, or one lacking the role (403)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class Authenticator:
    """Checks a bearer token against every grant (constant time), re-reading the tokens file
    when its size, time or inode changed (one ``stat`` per call)."""

    def __init__(self, static: Iterable[Grant], tokens_file: Path | None = None) -> None:
        self._static = list(static)
        self._file = tokens_file
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._from_file: list[Grant] = []
        # closed for good once any token or a tokens file is configured: a file rewritten at
        # runtime never turns the API anonymous
        self._closed = bool(self._static) or tokens_file is not None
        if tokens_file is not None:
            self._seen = self._signature()
            self._from_file = load_tokens_file(tokens_file)  # at start-up a bad file refuses to start

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator:
        """The grants of a :class:`~services.settings.ServeSettings`."""

        def secret(s: Any) -> str | None:
            return s.get_secret_value() if s is not None else None

        return cls(static_grants(secret(settings.api_token), secret(settings.admin_token)), settings.tokens_file)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._file) if self._file is not None else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino) if st else None

    def grants(self) -> list[Grant]:
        """Every grant now: the file's are read again when it changed (a bad new file keeps the
        previous tokens and is logged, by name only)."""
        if self._file is not None:
            signature = self._signature()
            if signature != self._seen:
                with self._lock:
                    if signature != self._seen:
                        self._seen = signature
                        try:
                            self._from_file = load_tokens_file(self._file)
                            log.info("tokens file %s read again: %d tokens", self._file, len(self._from_file))
                        except ValueError as exc:
                            log.error("tokens file changed but kept the previous tokens: %s", exc)
        return [*self._static, *self._from_file]

    def guards(self, role: str | None) -> bool:
        """Whether a call of ``role`` needs a token (``None``: a read call). Admin calls always
        do; the others once any token or a tokens file was configured at start, whatever its roles
        (an admin token alone closes predict and feedback too: no token, no anonymous caller)."""
        return role == "admin" or self._closed

    def authenticate(self, header: str, role: str | None) -> str:
        """The name of the caller whose ``Authorization`` header is ``header``, allowed ``role``
        (``None``: any role reads); ``anonymous`` when the call needs no token."""
        if not self.guards(role):
            return ANONYMOUS
        grants = self.grants()
        if role == "admin" and not any("admin" in g.roles for g in grants):
            raise Refused(403, "admin_disabled", "admin calls are refused: STREAMCL_ADMIN_TOKEN is not set")
        if not header:
            raise Refused(401, "unauthorized", "missing Authorization: Bearer <token>")
        scheme, _, given = header.partition(" ")
        digest = _digest(given.strip())
        match = None
        for g in grants:  # every grant compared: the time does not say which one matched
            if hmac.compare_digest(g.digest, digest) and match is None:
                match = g
        if scheme.lower() != "bearer" or match is None:
            raise Refused(403, "forbidden", "wrong token")
        if role is not None and role not in match.roles:
            raise Refused(403, "forbidden", f"token {match.name!r} lacks the role {role!r}")
        return match.name


def bearer_matches(header: str, token: str) -> bool:
    """Whether ``header`` is ``Bearer <token>`` (constant time)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(_digest(given.strip()), _digest(token))


def caller(request: Any) -> str:
    """The name of the token a request came with (``anonymous`` without one): for an audit
    trail, never the token."""
    return str(getattr(request.state, "caller", ANONYMOUS))
