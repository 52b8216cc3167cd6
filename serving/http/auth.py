"""Bearer-key checks: an API key for inference and read routes, an admin key for load/unload.

With no keys configured the server is open (local use; ``serving/server.py`` warns when such
a server listens beyond loopback). Keys are compared in constant time. The checks read the
``Authorization`` header only: ``gate.py`` runs them at the ASGI layer, before the app reads a
body, so an unauthenticated client never makes the server parse anything.
"""

from __future__ import annotations

import secrets
from typing import Literal

from loradock.errors import AuthenticationError, LoradockError, PermissionDeniedError

Level = Literal["public", "api", "admin"]


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and secrets.compare_digest(a.encode(), b.encode())


class KeyChecker:
    def __init__(self, *, api_key: str | None, admin_key: str | None):
        self.api_key = api_key
        self.admin_key = admin_key

    @property
    def open(self) -> bool:
        return self.api_key is None and self.admin_key is None

    def authorized(self, header: str | None) -> bool:
        """Whether ``header`` carries the API key or the admin key (always, with no keys)."""
        return self.problem("api", header) is None

    def problem(self, level: Level, header: str | None) -> LoradockError | None:
        """Why a request with this ``Authorization`` header may not use a route of ``level``
        (None: it may). The admin key also opens every API route."""
        if level == "public" or self.open:
            return None
        token = _bearer(header)
        if level == "api":
            if token is None:
                return AuthenticationError(
                    "Missing API key: send the header 'Authorization: Bearer <key>' "
                    "(the openai client's api_key)."
                )
            if _same(token, self.api_key) or _same(token, self.admin_key):
                return None
            return AuthenticationError(
                "Invalid API key: check the key this server was started with."
            )
        if token is None:
            return AuthenticationError(
                "Missing admin key: send the header 'Authorization: Bearer <admin key>'."
            )
        if _same(token, self.admin_key):
            return None
        if _same(token, self.api_key):
            return PermissionDeniedError(
                "This API key may not load or unload adapters: use the admin key"
                + ("" if self.admin_key else " (start the server with --admin-key)")
                + "."
            )
        return AuthenticationError("Invalid admin key: check the key this server was started with.")
