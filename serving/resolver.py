"""A request's ``model`` string -> the base, or an ``AdapterSpec`` resolved through the registry.

This is the only door from a request to a file: names go through ``Registry.resolve`` (which
returns a verified snapshot) and the compatibility check, never through the filesystem.
Anything that looks like a path is refused before the registry sees it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from loradock.errors import (
    AdapterNotFoundError,
    IncompatibleAdapterError,
    InvalidNameError,
)
from loradock.serving.engine import AdapterSpec

RESOLVE_TTL_S = 2.0  # how long a resolved name is reused before the registry is asked again


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
        allow_any: bool = True,
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
        self.allow_any = allow_any
        self.max_lora_rank = max_lora_rank
        self.merged = merged  # a merged model is served alone: every other name is refused
        self._compat: dict[tuple[str, str], IncompatibleAdapterError | None] = {}
        self._lock = threading.Lock()
        # name -> (expiry, spec). Resolving reads the store (two card YAML parses, ~1 ms
        # locally; an HTTP round trip on the Hub) for every request; names are few and
        # change rarely, so an alias moved or a revision published is seen within the TTL.
        self.cache_ttl_s = cache_ttl_s
        self._resolved: dict[str, tuple[float, AdapterSpec]] = {}

    def is_base(self, model: str) -> bool:
        return model in self.base_names

    def cached(self, model: str) -> tuple[bool, AdapterSpec | None]:
        """``(True, spec)`` when ``model`` resolves without reading the store (the base, or a
        name resolved less than ``cache_ttl_s`` ago); ``(False, None)`` when it must be read."""
        if self.is_base(model):
            return True, None
        hit = self._resolved.get(model)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def resolve(self, model: str) -> AdapterSpec | None:
        """``None`` for the base model; an ``AdapterSpec`` for an adapter; raises otherwise."""
        if self.is_base(model):
            return None
        if self.merged:
            raise AdapterNotFoundError(
                f"The model {model!r} is not served here: this server serves only the merged "
                f"model {self.base_name!r}, which takes no adapters (a server started with "
                "--base BASE serves adapters). GET /v1/models lists it."
            )
        target = self.served.get(model)
        if target is None:
            target = self._registry_name(model)
        resolved = self.registry.resolve(target)
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
            self._resolved[model] = (time.monotonic() + self.cache_ttl_s, spec)
        return spec

    def _registry_name(self, model: str) -> str:
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
        if not self.allow_any and ref.repo_id not in {
            parse_name(t).repo_id for t in self.served.values()
        }:
            raise AdapterNotFoundError(
                f"The model {model!r} is not served here: this server serves only "
                f"{', '.join(sorted(self.served))} (GET /v1/models)."
            )
        return model

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
