"""A vLLM plugin: plain ``vllm serve BASE --enable-lora`` resolves adapters from the registry.

vLLM loads every ``vllm.general_plugins`` entry point in each of its processes (API server,
engine core, workers); pyproject.toml declares ``loradock_resolver = ...:register``. So
``register()`` must be cheap and idempotent: it only registers a resolver object, and the
registry is opened on the first request that names an adapter vLLM does not know yet.

A request's ``model`` such as ``acme/dates-lora@prod`` reaches :meth:`resolve_lora` when vLLM
runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. The name is resolved through the loradock
registry (``LORADOCK_HOME``, ``LORADOCK_STORE``, ``HF_ENDPOINT``, ``HF_TOKEN`` as everywhere)
into a verified local snapshot and handed to vLLM as a ``LoRARequest`` only if:

- it is allowed: listed in ``LORADOCK_VLLM_ALLOWED`` (``org/name``, ``org/*``, or ``*`` for
  any registry adapter), or, when that is unset, indexed for the served base
  (``LORADOCK_VLLM_BASE``, else vLLM's model name when it is a registry name);
- it fits: rank at most ``LORADOCK_VLLM_MAX_LORA_RANK`` (vLLM's default 16 when unset), the
  features vLLM supports, and the served base when that is a local folder
  (``registry.compat.check_compatibility``).

``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` also opens vLLM's own ``/v1/load_lora_adapter``, which
loads an adapter from any local path a client names. vLLM checks its API key on that route,
so with that setting ``register()`` refuses to register without ``VLLM_API_KEY`` (the key in
the environment, not on the command line) unless ``LORADOCK_VLLM_ALLOW_NO_KEY=1`` says the
operator accepts an open route (a loopback-only test server). See docs/vllm.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loradock.errors import IncompatibleAdapterError, InvalidNameError, LoradockError

# Under "vllm.": vLLM configures only its own logger tree, so this reaches the server log.
log = logging.getLogger("vllm.loradock_resolver")

RESOLVER_NAME = "loradock"
# Adapters above this rank are refused with a clear log line instead of failing in a worker;
# set it to the server's --max-lora-rank. Unset: vLLM's own default, 16.
MAX_RANK_ENV = "LORADOCK_VLLM_MAX_LORA_RANK"
VLLM_DEFAULT_MAX_LORA_RANK = 16
ALLOWED_ENV = "LORADOCK_VLLM_ALLOWED"
BASE_ENV = "LORADOCK_VLLM_BASE"
NO_KEY_ENV = "LORADOCK_VLLM_ALLOW_NO_KEY"


def runtime_loading_problem(environ: Mapping[str, str]) -> str | None:
    """Why registering would leave vLLM's runtime LoRA loading open to anyone (None: it
    would not). Without ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` (``loradock serve --engine
    vllm``), vLLM never asks resolvers and its loading route is off: nothing is open."""
    runtime_loading = environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower()
    if runtime_loading not in ("1", "true"):
        return None
    if environ.get("VLLM_API_KEY") or environ.get(NO_KEY_ENV) == "1":
        return None
    return (
        "loradock resolver NOT registered: VLLM_ALLOW_RUNTIME_LORA_UPDATING, which the "
        "resolver needs, also opens vLLM's /v1/load_lora_adapter, which loads an adapter from "
        "any local path a client names. Set VLLM_API_KEY (vLLM then checks it on every /v1 "
        f"route), or {NO_KEY_ENV}=1 for a server no one else can reach."
    )


def allowed_problem(
    repo_id: str, *, allowed: str | None, base_id: str | None, record: Any
) -> str | None:
    """Why ``repo_id`` may not be served (None: it may). ``allowed``: the allow-list text;
    ``record``: the repo's index row, or None when the index does not hold it."""
    if allowed is not None and allowed.strip():
        entries = {e.strip() for e in allowed.split(",") if e.strip()}
        org = repo_id.split("/", 1)[0]
        if entries & {"*", repo_id, f"{org}/*"}:
            return None
        return f"{repo_id!r} is not in {ALLOWED_ENV} ({', '.join(sorted(entries))})"
    if base_id is None:
        return (
            f"the served base has no registry name: set {BASE_ENV} to it (the adapters "
            f"indexed for it are then served), or list adapters in {ALLOWED_ENV}"
        )
    if record is None:
        return f"{repo_id!r} is not in the registry's index (run `loradock registry sync`)"
    if record.kind != "adapter" or record.base_model != base_id:
        return (
            f"{repo_id!r} is indexed for {record.base_model!r}, not for the served base "
            f"{base_id!r} (add it to {ALLOWED_ENV} to serve it anyway)"
        )
    return None


def _lora_resolver_base() -> type:
    from vllm.lora.resolver import LoRAResolver

    return LoRAResolver


class _RegistryResolverMixin:
    """The resolving logic, kept apart from vLLM's ABC so it reads (and tests) plainly."""

    def __init__(self, registry: Any = None) -> None:
        self._registry = registry
        self._lock = threading.Lock()

    def registry(self) -> Any:
        with self._lock:
            if self._registry is None:
                from loradock.registry.api import Registry

                self._registry = Registry.open()
            return self._registry

    def resolve_sync(self, base_model_name: str, lora_name: str) -> Any:
        """``LoRARequest`` for an allowed registry name that fits, or None (vLLM: 404)."""
        from vllm.lora.request import LoRARequest

        from loradock.registry.names import parse_name

        try:
            ref = parse_name(lora_name)
        except InvalidNameError:
            return None  # not a registry name: another resolver's business
        base_id = os.environ.get(BASE_ENV) or _registry_name(base_model_name)
        refused = allowed_problem(
            ref.repo_id,
            allowed=os.environ.get(ALLOWED_ENV),
            base_id=base_id,
            record=self._record(ref.repo_id),
        )
        if refused is not None:
            log.warning("loradock: %r is not served: %s", lora_name, refused)
            return None
        max_rank = int(os.environ.get(MAX_RANK_ENV, "0") or 0) or VLLM_DEFAULT_MAX_LORA_RANK
        try:  # the rank limit goes with the name: a larger adapter is never downloaded
            resolved = self.registry().resolve(lora_name, max_rank=max_rank)
        except LoradockError as exc:
            log.warning("loradock: cannot resolve %r: %s", lora_name, exc)
            return None
        problems = _fit_problems(resolved, base_model_name, base_id, max_rank)
        if problems:
            log.warning(
                "loradock: adapter %r cannot be served by this vLLM server:\n%s",
                lora_name,
                "\n".join(f"  - {p}" for p in problems),
            )
            return None
        return LoRARequest(
            lora_name=lora_name,
            lora_int_id=1,  # vLLM assigns its own unique id to resolved adapters
            lora_path=str(resolved.path),
            base_model_name=base_model_name,
        )

    def _record(self, repo_id: str) -> Any:
        try:
            return self.registry().show(repo_id)
        except LookupError:
            return None


def _registry_name(name: str) -> str | None:
    """vLLM's model name when it is a registry name (``org/name``), not a folder."""
    from loradock.registry.names import parse_name

    if Path(name).exists():
        return None
    try:
        return parse_name(name).repo_id
    except InvalidNameError:
        return None


def _fit_problems(
    resolved: Any, base_model_name: str, base_id: str | None, max_rank: int
) -> list[str]:
    """What keeps this vLLM server from serving the adapter: rank, features, the base."""
    from loradock.registry.artifact import read_adapter
    from loradock.registry.compat import check_compatibility
    from loradock.serving.engines.vllm.limits import vllm_adapter_problems

    artifact = getattr(resolved, "artifact", None) or read_adapter(resolved.path)
    servable = _servable_for(base_model_name)
    problems = vllm_adapter_problems(artifact, max_lora_rank=max_rank, servable=servable)
    folder = Path(base_model_name)
    if (folder / "config.json").is_file():
        try:
            check_compatibility(artifact, folder, base_id=base_id)
        except IncompatibleAdapterError as exc:
            problems += [p for p in exc.problems if p not in problems]
    return problems


def _servable_for(base_model_name: str) -> frozenset[str] | None:
    """Module names of the served base when it is a local folder (else: no module check)."""
    from loradock.serving.engines.vllm.limits import servable_modules

    folder = Path(base_model_name)
    if folder.is_dir() and any(folder.glob("*.safetensors")):
        return servable_modules(folder)
    return None


def make_resolver(registry: Any = None) -> Any:
    """A ``vllm.lora.resolver.LoRAResolver`` backed by the loradock registry."""
    base = _lora_resolver_base()

    class LoradockLoRAResolver(_RegistryResolverMixin, base):
        async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
            # Resolving may download a snapshot: keep vLLM's event loop serving meanwhile.
            return await asyncio.to_thread(self.resolve_sync, base_model_name, lora_name)

    return LoradockLoRAResolver(registry)


def register() -> None:
    """Entry point of ``vllm.general_plugins``: register the resolver (cheap, idempotent),
    unless that would leave runtime LoRA loading open (``runtime_loading_problem``)."""
    from vllm.lora.resolver import LoRAResolverRegistry

    if RESOLVER_NAME in LoRAResolverRegistry.get_supported_resolvers():
        return
    problem = runtime_loading_problem(os.environ)
    if problem is not None:
        log.error("%s", problem)
        return
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, make_resolver())
