"""A vLLM plugin: plain ``vllm serve BASE --enable-lora`` resolves adapters from the registry.

vLLM loads every ``vllm.general_plugins`` entry point in each of its processes (API server,
engine core, workers); pyproject.toml declares ``loradock_resolver = ...:register``. So
``register()`` must be cheap and idempotent: it only registers a resolver object, and the
registry is opened on the first request that names an adapter vLLM does not know yet.

A request's ``model`` such as ``acme/dates-lora@prod`` reaches :meth:`resolve_lora` when vLLM
runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. The name is resolved through the loradock
registry (``LORADOCK_HOME``, ``LORADOCK_STORE``, ``HF_ENDPOINT``, ``HF_TOKEN`` as everywhere)
into a verified local snapshot, checked, and handed to vLLM as a ``LoRARequest``. See
docs/vllm.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from loradock.errors import InvalidNameError, LoradockError

# Under "vllm.": vLLM configures only its own logger tree, so this reaches the server log.
log = logging.getLogger("vllm.loradock_resolver")

RESOLVER_NAME = "loradock"
# Adapters above this rank are refused with a clear log line instead of failing in a worker;
# set it to the server's --max-lora-rank (vLLM's default is 16).
MAX_RANK_ENV = "LORADOCK_VLLM_MAX_LORA_RANK"


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
        """``LoRARequest`` for a registry name, or None (vLLM then answers 404)."""
        from vllm.lora.request import LoRARequest

        from loradock.registry.artifact import read_adapter
        from loradock.registry.names import parse_name
        from loradock.serving.engines.vllm.limits import vllm_adapter_problems

        try:
            parse_name(lora_name)
        except InvalidNameError:
            return None  # not a registry name: another resolver's business
        try:
            resolved = self.registry().resolve(lora_name)
        except LoradockError as exc:
            log.warning("loradock: cannot resolve %r: %s", lora_name, exc)
            return None
        artifact = getattr(resolved, "artifact", None) or read_adapter(resolved.path)
        max_rank = int(os.environ.get(MAX_RANK_ENV, "0") or 0) or 512
        servable = _servable_for(base_model_name)
        problems = vllm_adapter_problems(artifact, max_lora_rank=max_rank, servable=servable)
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
    """Entry point of ``vllm.general_plugins``: register the resolver (cheap, idempotent)."""
    from vllm.lora.resolver import LoRAResolverRegistry

    if RESOLVER_NAME in LoRAResolverRegistry.get_supported_resolvers():
        return
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, make_resolver())
