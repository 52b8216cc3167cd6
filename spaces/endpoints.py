"""Which endpoint a page request goes to, and with which key: the Space's secret stays home.

Everything in "Endpoint settings" is typed by visitors, so nothing typed there is trusted:

* the Space's own key (``LORADOCK_API_KEY``) goes only to its configured endpoint
  (``LORADOCK_ENDPOINT``) and to the endpoints listed in ``LORADOCK_TRUSTED_ENDPOINTS``;
* any other typed endpoint gets the key typed beside it, or no key at all;
* a locked Space (``LORADOCK_LOCK_ENDPOINT=1``, the default on a Hugging Face Space)
  refuses typed endpoints, so its server calls no host but the configured one;
* only battles on a trusted endpoint count on the shared arena, so a fake endpoint
  cannot put names on it.

Endpoints are compared in one canonical form (scheme, lower-case host, explicit port,
path without ``/`` or ``/v1`` at the end), so ``HTTP://Host:80/v1/`` is ``http://host``
while ``http://host.evil.example`` and ``http://host@evil.example`` are not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx

try:
    from .client import DEFAULT_ENDPOINT, EndpointError
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from client import DEFAULT_ENDPOINT, EndpointError  # type: ignore[no-redef]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def canonical_endpoint(url: str) -> str:
    """``scheme://host:port[/path]`` of an endpoint URL; refuses what is not a plain http(s) URL."""
    text = (url or "").strip()
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise EndpointError(
            f"Endpoint {text!r} is not an http(s) URL: give one like {DEFAULT_ENDPOINT}"
        )
    # A user name, query or fragment has no place in an endpoint and only serves to make
    # a foreign host look like a trusted one (``http://trusted@evil``).
    if parsed.userinfo or parsed.query or parsed.fragment:
        raise EndpointError(
            f"Endpoint {text!r} carries a user name, query or fragment: give the bare URL, "
            f"like {DEFAULT_ENDPOINT}"
        )
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host.lower()
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    path = parsed.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return f"{parsed.scheme}://{host}:{port}{path}"


@dataclass(frozen=True)
class Connection:
    """Where one page request goes: the endpoint, the key it carries, and whether it is trusted."""

    endpoint: str
    api_key: str | None = field(repr=False)
    trusted: bool  # the Space's own endpoint (or an allow-listed one): its key, its arena


@dataclass(frozen=True)
class EndpointPolicy:
    """The Space's configured endpoint, its key, the allow-list and the lock."""

    endpoint: str
    api_key: str | None = field(default=None, repr=False)
    trusted: frozenset[str] = frozenset()  # canonical; the configured endpoint included
    locked: bool = False

    @classmethod
    def create(
        cls,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        trusted_endpoints: Iterable[str] | None = None,
        locked: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> EndpointPolicy:
        """Arguments first, then the environment; a setting that cannot work is refused."""
        env = os.environ if environ is None else environ
        configured = canonical_endpoint(
            endpoint or env.get("LORADOCK_ENDPOINT") or DEFAULT_ENDPOINT
        )
        if trusted_endpoints is None:
            trusted_endpoints = env.get("LORADOCK_TRUSTED_ENDPOINTS", "").replace(",", " ").split()
        extra = frozenset(canonical_endpoint(url) for url in trusted_endpoints)
        if locked is None:
            locked = _flag(env, "LORADOCK_LOCK_ENDPOINT", default=bool(env.get("SPACE_ID")))
        if locked and extra - {configured}:
            raise ValueError(
                "LORADOCK_TRUSTED_ENDPOINTS lists endpoints a visitor may switch to, but "
                "LORADOCK_LOCK_ENDPOINT locks the Space to LORADOCK_ENDPOINT: set one of them."
            )
        key = (api_key or env.get("LORADOCK_API_KEY") or "").strip() or None
        return cls(configured, key, extra | {configured}, bool(locked))

    def connect(self, typed_endpoint: str | None, typed_key: str | None) -> Connection:
        """The connection for what a visitor typed (blank endpoint: the configured one).

        Raises :class:`EndpointError` for a malformed endpoint, or any other endpoint than
        the configured one while the Space is locked.
        """
        typed = (typed_endpoint or "").strip()
        target = canonical_endpoint(typed) if typed else self.endpoint
        if self.locked and target != self.endpoint:
            raise EndpointError(
                "This Space is locked to its configured endpoint and calls no other: clear "
                "the endpoint box, or run your own Space (`loradock space run`) to use "
                f"{typed!r}."
            )
        trusted = target in self.trusted
        key = (typed_key or "").strip() or (self.api_key if trusted else None)
        return Connection(target, key, trusted)


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE + _FALSE:
        return value in _TRUE
    raise ValueError(f"{name}={env[name]!r} is not a yes/no value: use 1 or 0.")
