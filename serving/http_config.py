"""``HttpConfig``: the endpoint's part of the server configuration (``config.ServerConfig.http``).

Where it listens, its keys, which names it answers to and what it accepts. The defaults are
the narrow ones: loopback only, adapters indexed for the base or listed at start, no API
docs, a 2 MiB body; ``exposure()`` names every option that widens them (the server logs them
when it starts, and docs/security.md lists them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loradock.errors import InvalidNameError
from loradock.serving.config_fields import int_problems, option, refuse

# A served alias is a single word: it must never look like a path or a registry name.
SERVED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_KEY_LENGTH = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class HttpConfig:
    """The endpoint: where it listens, its keys, which names it answers to, what it accepts.

    The defaults are the narrow ones: loopback only, adapters indexed for the base or listed
    at start, no API docs; ``exposure()`` names every option that widens them."""

    host: str = option("127.0.0.1", "Address to listen on")
    port: int = option(8000, "Port (0: any free port)")
    api_key: str | None = option(
        None,
        f"Bearer key of every API route (at least {MIN_KEY_LENGTH} characters)",
        envvar="LORADOCK_API_KEY",
        repr=False,
    )
    admin_key: str | None = option(
        None,
        f"Bearer key of load/unload (at least {MIN_KEY_LENGTH} characters)",
        envvar="LORADOCK_ADMIN_KEY",
        repr=False,
    )
    # What /v1/models and requests call the base: `base`, or a folder's own name when `base`
    # is a path (a model id never shows a path of the server's disk).
    served_base_name: str | None = option(
        None,
        "The base's model id in /v1/models and requests (default: --base, or a folder's own name)",
        "--served-name",
        "--served-base-name",
    )
    allow_any_registry_adapter: bool = option(
        False,
        "Also fetch and serve registry adapters that are not indexed for the base "
        "(any repo a request names)",
        "--any-registry-adapter",
    )
    only_listed: bool = option(
        False, "Serve only the --adapter names (not the adapters indexed for the base)"
    )
    docs: bool = option(False, "Serve /docs, /redoc and /openapi.json (no key needed)")
    max_request_bytes: int = option(
        2 * 1024 * 1024, "Largest request body in bytes (larger: 413 before it is read)"
    )

    def __post_init__(self) -> None:
        refuse(self.problems(vars(self)))

    @property
    def adapter_scope(self) -> str:
        """Which registry adapters requests may name: listed, indexed or any."""
        if self.only_listed:
            return "listed"
        return "any" if self.allow_any_registry_adapter else "indexed"

    def exposure(self) -> list[str]:
        """What this configuration opens beyond the defaults (logged when the server starts)."""
        out = []
        if self.host not in LOOPBACK_HOSTS and self.api_key is None and self.admin_key is None:
            out.append(
                f"listening on {self.host} without an API key: anyone who can reach this "
                "address can generate, load and unload adapters (set --api-key-file and "
                "--admin-key-file)"
            )
        if self.allow_any_registry_adapter:
            out.append(
                "--any-registry-adapter: a request may name any registry repo, which the "
                "server then downloads (verified, adapter files only)"
            )
        if self.docs:
            out.append("--docs: /docs, /redoc and /openapi.json are served without a key")
        return out

    @staticmethod
    def problems(v: Mapping[str, Any]) -> list[str]:
        problems = []
        if not isinstance(v["port"], int) or not 0 <= v["port"] <= 65535:
            problems.append(f"port={v['port']!r} must be an integer in 0..65535 (0: any free port)")
        for key_name in ("api_key", "admin_key"):
            key = v[key_name]
            if key is not None and (
                not isinstance(key, str) or len(key) < MIN_KEY_LENGTH or key != key.strip()
            ):
                problems.append(
                    f"{key_name} must be a string of at least {MIN_KEY_LENGTH} characters "
                    "without surrounding spaces (e.g. `openssl rand -hex 24`)"
                )
        served = v["served_base_name"]
        if served is not None and not _valid_served_base_name(served):
            problems.append(
                f"served base name {served!r} must be one word or 'org/name' of letters, "
                "digits, '.', '_' or '-' (never a path), e.g. --served-name acme/smollm2"
            )
        if v["allow_any_registry_adapter"] is True and v["only_listed"] is True:
            problems.append(
                "--any-registry-adapter and --only-listed contradict each other: give one"
            )
        problems += int_problems(v, {"max_request_bytes": 1024})
        return problems


def _valid_served_base_name(name: str) -> bool:
    from loradock.registry.names import validate_repo_id

    if not isinstance(name, str):
        return False
    if SERVED_NAME_RE.fullmatch(name):
        return True
    try:
        validate_repo_id(name)
    except InvalidNameError:
        return False
    return True
