"""A request's ``model`` string -> the base, or an ``AdapterSpec`` resolved through the registry.

This is the only door from a request to a file: names go through ``Registry.resolve`` (which
returns a verified snapshot) and the compatibility check, never through the filesystem.
Anything that looks like a path, or holds whitespace or a control character, is refused
before the registry sees it.

Which registry repos a request may name is the server's ``scope``: ``listed`` (the names
given at start), ``indexed`` (the default: those too, and the adapters the index holds for
this base) or ``any`` (any registry repo, downloaded on demand). A name the admin loads
(``/v1/adapters/load``) is served afterwards whatever the scope: loading is the admin's call.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    IncompatibleAdapterError,
    IntegrityError,
    InvalidNameError,
    StoreError,
)
from loradock.serving.engines.base import AdapterSpec

RESOLVE_TTL_S = 2.0  # how long a resolved name is reused before the registry is asked again
# Past its TTL, a name is still answered from the cache while ONE background refresh reads the
# store (stale-while-revalidate), for at most this many TTLs; older entries are read again
# before the request goes on. Without it, every request for a name that expired waited on the
# store, all at once under load (8 names x 4 concurrent clients: 32 reads every 2 s).
STALE_TTLS = 10
# When reading the registry fails for a reason that passes (the Hub unreachable, slow, 429/5xx),
# a name resolved before is served from its last good resolve (a verified snapshot) for at most
# this long after that resolve succeeded; past it the error reaches the client.
STALE_IF_ERROR_S = 300.0
# An alias missing on the Hub is what a move looks like there (delete, then create): the last
# good sha is kept this long, so readers never see the gap; a deleted alias fails after it.
ALIAS_MOVE_GRACE_S = 30.0


SCOPES = ("listed", "indexed", "any")

logger = logging.getLogger(__name__)


def _check_characters(model: str) -> None:
    """Whitespace and control characters never belong to a name: ``"org/x\\n"`` is refused
    whole rather than trimmed into another name."""
    bad = sorted({c for c in model if c.isspace() or not c.isprintable()})
    if bad:
        raise InvalidNameError(
            f"model {model!r} contains whitespace or control characters "
            f"({', '.join(repr(c) for c in bad)}): send the name exactly as GET /v1/models "
            "lists it."
        )


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "~", ".", "\\"))
        or ".." in model
        or "\\" in model
        or model.count("/") > 1
        or ":" in model.split("@", 1)[0]
        or "\x00" in model
    )


class AdapterResolver:
    """Resolves request names; compatibility results are cached per (repo, sha)."""

    def __init__(
        self,
        registry: Any,
        *,
        base_name: str,
        base: Any,
        served: dict[str, str] | None = None,
        scope: str = "indexed",
        max_lora_rank: int | None = None,
        base_aliases: tuple[str, ...] = (),
        merged: bool = False,
        cache_ttl_s: float = RESOLVE_TTL_S,
    ):
        self.registry = registry
        self.base_name = base_name
        self.base_names = {base_name, *base_aliases}
        self.base = base  # a ResolvedModel (its repo id is checked too) or a model folder
        self.served = dict(served or {})
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        self.scope = scope
        # The base's registry names: adapters the index holds for one of them are "indexed".
        self.index_bases = {n.split("@", 1)[0] for n in base_aliases}
        if getattr(base, "repo_id", None):
            self.index_bases.add(base.repo_id)
        self._listed = {_repo_of(t) for t in self.served.values()}
        self._admitted: set[str] = set()  # repos the admin loaded
        self.max_lora_rank = max_lora_rank
        self.merged = merged  # a merged model is served alone: every other name is refused
        self._compat: dict[tuple[str, str], IncompatibleAdapterError | None] = {}
        self._lock = threading.Lock()
        # name -> (expiry, spec). Resolving reads the store (two card YAML parses, ~1 ms
        # locally; an HTTP round trip on the Hub) for every request; names are few and
        # change rarely, so an alias moved or a revision published is seen within the TTL.
        self.cache_ttl_s = cache_ttl_s
        self._resolved: dict[str, tuple[float, AdapterSpec]] = {}
        self._last_ok: dict[str, float] = {}  # name -> when its cached spec was last read
        self.stale_if_error = 0  # times a failing read was answered from the last good spec
        self._refreshing: set[str] = set()
        # Striped, not one per name: names come from requests, and a dict of them would grow.
        self._name_locks = [threading.Lock() for _ in range(64)]

    def is_base(self, model: str) -> bool:
        return model in self.base_names

    def cached(self, model: str) -> tuple[bool, AdapterSpec | None]:
        """``(True, spec)`` when ``model`` resolves without reading the store (the base, or a
        name resolved less than ``cache_ttl_s`` ago, or less than ``STALE_TTLS`` TTLs ago while
        one background refresh reads it again); ``(False, None)`` when it must be read."""
        if self.is_base(model):
            return True, None
        hit = self._resolved.get(model)
        if hit is None:
            return False, None
        expiry, spec = hit
        now = time.monotonic()
        if expiry > now:
            return True, spec
        if now - expiry > self.cache_ttl_s * (STALE_TTLS - 1):
            return False, None  # too old to serve while refreshing: read it now
        self._refresh_in_background(model)
        return True, spec

    def _refresh_in_background(self, model: str) -> None:
        with self._lock:
            if model in self._refreshing:
                return
            self._refreshing.add(model)

        def refresh() -> None:
            try:
                self._resolve_once(model)
            except Exception as exc:  # gone, moved out of reach, now incompatible: forget it,
                if self._stale_fallback(model, exc) is None:  # and the next request reads
                    with self._lock:  # the store and gets the error
                        self._resolved.pop(model, None)
            finally:
                with self._lock:
                    self._refreshing.discard(model)

        threading.Thread(target=refresh, name="loradock-resolve", daemon=True).start()

    def resolve(self, model: str, *, admin: bool = False) -> AdapterSpec | None:
        """``None`` for the base model; an ``AdapterSpec`` for an adapter; raises otherwise.

        ``admin``: the admin's load route, which may name any registry repo (and admits it).
        Concurrent calls for one name read the store once: the others wait for that read and
        take its result (errors are not cached: each caller then reads and gets its own)."""
        if self.is_base(model):
            return None
        _check_characters(model)
        with self._name_locks[hash(model) % len(self._name_locks)]:
            hit = self._resolved.get(model)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]  # another caller resolved it while this one waited
            try:
                spec = self._resolve_once(model, admin=admin)
            except Exception as exc:
                spec = self._stale_fallback(model, exc)
                if spec is None:
                    raise
        if admin:
            with self._lock:
                self._admitted.add(spec.repo_id)
        return spec

    def stats(self) -> dict[str, float]:
        """Counters for ``/metrics`` (``loradock_stale_if_error_total``)."""
        return {"stale_if_error": float(self.stale_if_error)}

    def _stale_fallback(self, model: str, exc: Exception) -> AdapterSpec | None:
        """The last good spec of ``model`` when ``exc`` is a passing failure of the registry
        and that spec is recent enough; it is then served for one more TTL (so a Hub that is
        down is asked once per TTL, not per request). ``None``: the error stands."""
        if isinstance(exc, AliasNotFoundError):
            bound = ALIAS_MOVE_GRACE_S
        elif isinstance(exc, StoreError) and not isinstance(exc, IntegrityError):
            bound = STALE_IF_ERROR_S
        else:
            return None
        with self._lock:
            hit, last_ok = self._resolved.get(model), self._last_ok.get(model)
            now = time.monotonic()
            if hit is None or last_ok is None or now - last_ok > bound:
                return None
            self._resolved[model] = (now + self.cache_ttl_s, hit[1])
            self.stale_if_error += 1
        logger.warning(
            "Serving %s from its last good resolve (%s@%s, %.0f s old): %s",
            model,
            hit[1].repo_id,
            hit[1].sha[:12],
            now - last_ok,
            exc,
        )
        return hit[1]

    def _resolve_once(self, model: str, *, admin: bool = False) -> AdapterSpec:
        if self.merged:
            raise AdapterNotFoundError(
                f"The model {model!r} is not served here: this server serves only the merged "
                f"model {self.base_name!r}, which takes no adapters (a server started with "
                "--base BASE serves adapters). GET /v1/models lists it."
            )
        target = self.served.get(model)
        if target is None:
            target = self._registry_name(model, admin=admin)
        # the rank limit goes with the name: a larger adapter is refused before its download
        resolved = self.registry.resolve(target, max_rank=self.max_lora_rank)
        self._check(resolved, model)
        artifact = resolved.artifact
        spec = AdapterSpec(
            name=model,
            repo_id=resolved.repo_id,
            sha=resolved.sha,
            path=Path(resolved.path),
            rank=int(getattr(artifact, "max_rank", None) or artifact.rank),
            target_modules=tuple(artifact.target_modules),
        )
        if self.cache_ttl_s > 0:
            now = time.monotonic()
            with self._lock:
                self._resolved[model] = (now + self.cache_ttl_s, spec)
                self._last_ok[model] = now
        return spec

    def _registry_name(self, model: str, *, admin: bool = False) -> str:
        if _looks_like_path(model):
            raise InvalidNameError(
                f"model {model!r} looks like a file path; this server loads adapters only by "
                "registry name ('org/name', 'org/name@<sha>' or 'org/name@<alias>'). "
                "GET /v1/models lists what it serves."
            )
        if "/" not in model:
            raise AdapterNotFoundError(
                f"The model {model!r} does not exist here: use the base {self.base_name!r}, "
                f"a served name ({', '.join(sorted(self.served)) or 'none'}) or a registry "
                "name 'org/name[@revision]'. GET /v1/models lists them."
            )
        from loradock.registry.names import parse_name

        ref = parse_name(model)  # InvalidNameError (400) for a malformed name
        if not admin and not self._in_scope(ref.repo_id):
            raise AdapterNotFoundError(
                f"The model {model!r} is not served here: {self._scope_text()} "
                "(GET /v1/models lists them)."
            )
        return model

    def _in_scope(self, repo_id: str) -> bool:
        if self.scope == "any" or repo_id in self._listed or repo_id in self._admitted:
            return True
        if self.scope == "listed":
            return False
        try:  # the index only: a name outside it never makes the server download anything
            record = self.registry.show(repo_id)
        except LookupError:
            return False
        return record.kind == "adapter" and record.base_model in self.index_bases

    def _scope_text(self) -> str:
        listed = ", ".join(sorted(self.served)) or "none"
        if self.scope == "listed":
            return f"this server serves only the names it was started with ({listed})"
        return (
            f"this server serves the names it was started with ({listed}) and the adapters "
            f"indexed for its base {self.base_name!r}; an admin can load others "
            "(POST /v1/adapters/load), or start the server with --any-registry-adapter"
        )

    def _check(self, resolved: Any, model: str) -> None:
        key = (resolved.repo_id, resolved.sha)
        with self._lock:
            known = key in self._compat
            problem = self._compat.get(key)
        if not known:
            from loradock.registry.compat import check_compatibility

            try:
                check_compatibility(resolved.artifact, self.base, max_rank=self.max_lora_rank)
                problem = None
            except IncompatibleAdapterError as exc:
                problem = exc
            with self._lock:
                self._compat[key] = problem
        if problem is not None:
            raise IncompatibleAdapterError(
                f"Adapter {model!r} ({resolved.repo_id}@{resolved.sha[:12]}) cannot be served "
                f"on the base {self.base_name!r}",
                problem.problems,
            )


def _repo_of(name: str) -> str:
    return name.split("@", 1)[0]
