"""``EngineReplica``: one engine inside a Ray Serve replica, adapters multiplexed by id.

The engine is the one ``loradock serve`` builds in one process (``server.build_engine``): the
PEFT engine, or vLLM's. Ray Serve's model multiplexing keeps, per replica, an LRU of the model
ids it has loaded (as many as the engine's adapter slots, ``warm_slots``) and routes a request
carrying an id to a replica holding it (else to the replica holding the fewest). The id is the
adapter's ``org/name@sha``: every alias and revision name of one commit lands on the same
replica. The engine's own cache attaches the adapter when the request is admitted; Ray's LRU
decides only where requests go.

Each chunk goes back with the replica's id, and the last one with its engine's stats, so the
ingress's ``/metrics`` shows every replica that served without a side channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import serve

from loradock.serving.engines.base import AdapterSpec, Engine, GenerationRequest


def adapter_id(spec: AdapterSpec) -> str:
    """The multiplexed model id of an adapter: its exact commit."""
    return f"{spec.repo_id}@{spec.sha}"


def warm_slots(engine: Engine) -> int:
    """The adapters one replica serves without swapping: the PEFT engine's ``--max-loaded``
    slots, vLLM's ``max_loras`` (adapters in one batch; from ``--max-loaded`` unless
    ``--max-loras`` is given)."""
    limits = getattr(engine, "limits", None)  # vLLM's LoraLimits
    return limits.max_loras if limits is not None else engine.capabilities.max_loaded


def build_replica_engine(config: Any, base_path: Path, registry: Any) -> Engine:
    """The engine ``config`` names, built as the one-process server builds it. The PEFT engine
    runs in the replica's process: the replica is already a process of its own, and Ray
    replaces it if it dies."""
    from loradock.serving.server import build_engine

    if config.engine == "peft":
        config = replace(config, engine_process=False)
    return build_engine(config, base_path, registry=registry)


class EngineReplica:
    """A Ray Serve deployment class (``app.py`` wraps it with ``serve.deployment``)."""

    async def __init__(self, config: Any, settings: Any = None) -> None:
        self._settings = settings
        registry = self._registry(settings)
        base = await asyncio.to_thread(registry.resolve_base, config.base)
        self.engine = await asyncio.to_thread(build_replica_engine, config, base.path, registry)
        await self.engine.start()
        self.replica = serve.get_replica_context().replica_id.unique_id

        async def advertise(model_id: str) -> str:
            # The engine attaches the adapter when its request is admitted (waiting for a
            # slot while all serve running requests): loading here could only fail then.
            return model_id

        # Set per instance: the slot count is the engine's, not known when the class is defined.
        self._multiplexed = serve.multiplexed(max_num_models_per_replica=warm_slots(self.engine))(
            advertise
        )

    async def __del__(self) -> None:
        """Ray Serve's graceful stop: vLLM's engine-core process goes with the replica."""
        await self.engine.shutdown()

    def describe(self) -> dict[str, Any]:
        """What the ingress needs before it serves: the engine's limits."""
        return {
            "capabilities": self.engine.capabilities,
            "max_model_len": self.engine.frontend.max_model_len,
        }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[tuple]:
        """``(replica, stats or None, chunk)`` for each chunk of ``request``."""
        if request.adapter is not None:
            request.adapter = await self._attach(request.adapter)
        async for chunk in self.engine.generate(request):
            done = chunk.finish_reason is not None
            yield self.replica, self.report() if done else None, chunk

    async def load(self, spec: AdapterSpec) -> tuple[str, dict[str, Any]]:
        """The admin's preload, on the replica the id routes to."""
        await self.engine.load(await self._attach(spec))
        return self.replica, self.report()

    def report(self) -> dict[str, Any]:
        return {"stats": self.engine.stats(), "loaded": self.engine.loaded_adapters()}

    async def _attach(self, spec: AdapterSpec) -> AdapterSpec:
        model_id = adapter_id(spec)
        path = await asyncio.to_thread(self._local_path, spec)
        local = replace(spec, name=model_id, path=path)
        if serve.get_multiplexed_model_id() == model_id:
            await self._multiplexed(model_id)  # Ray's LRU: what this replica advertises
        return local

    def _local_path(self, spec: AdapterSpec) -> Path:
        """The ingress's snapshot when this machine shares its store, else this replica's
        own verified snapshot of the same commit, through the registry."""
        if Path(spec.path).is_dir():
            return Path(spec.path)
        return Path(self._registry(self._settings).resolve(adapter_id(spec)).path)

    @staticmethod
    def _registry(settings: Any) -> Any:
        """The registry as this machine sees it: a shared ``LORADOCK_HOME``, or the Hub."""
        from loradock.registry.api import Registry

        return Registry.open(settings)
