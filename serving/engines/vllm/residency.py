"""Which adapters vLLM holds: one ``LoRARequest`` per adapter commit, least recently used first.

vLLM keeps at most ``max_cpu_loras`` adapters loaded, and past that its own LRU may evict an
adapter a running request still needs; its worker then dies (``KeyError`` in
``convert_mapping``, measured with vllm 0.32). So the engine bounds what is loaded itself:
``LoraResidency`` adds an adapter only when there is room, evicts the least recently used one
that no running request needs, and makes a request wait (instead of failing) while every
loaded adapter is busy. ``loaded()`` then tells the truth about what vLLM holds.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import Any

from loradock.errors import AdapterNotFoundError, IncompatibleAdapterError
from loradock.serving.engines.base import AdapterSpec


class LoraResidency:
    """The adapters loaded into one vLLM engine (``bind`` it once vLLM has started)."""

    def __init__(self, *, capacity: int, base_name: str) -> None:
        self.capacity = capacity  # max_cpu_loras
        self.base_name = base_name
        self.counts: Counter[str] = Counter()  # disk_loads, evictions, slot_hits
        self._llm: Any = None
        self._names: OrderedDict[str, AdapterSpec] = OrderedDict()  # name -> spec, LRU first
        self._resident: OrderedDict[str, Any] = OrderedDict()  # sha -> LoRARequest, LRU first
        self._ids: dict[str, int] = {}  # sha -> lora_int_id, stable for the engine's life
        self._inflight: Counter[str] = Counter()  # sha -> running requests
        self._lock = asyncio.Lock()
        self._slot_freed = asyncio.Condition(self._lock)

    def bind(self, llm: Any) -> None:
        self._llm = llm

    def lora_int_id(self, sha: str) -> int:
        """One id per adapter commit for the engine's life: vLLM caches weights by id."""
        if sha not in self._ids:
            self._ids[sha] = len(self._ids) + 1
        return self._ids[sha]

    def loaded(self) -> list[str]:
        return list(self._names)

    def resident_count(self) -> int:
        return len(self._resident)

    async def load(self, adapter: AdapterSpec) -> None:
        async with self._slot_freed:
            await self._ensure_resident(adapter)
            self._touch(adapter)

    async def acquire(self, adapter: AdapterSpec) -> Any:
        """The adapter's ``LoRARequest``, loaded and marked in use until ``release``."""
        async with self._slot_freed:
            request = await self._ensure_resident(adapter)
            self._inflight[adapter.sha] += 1
            self._touch(adapter)
            return request

    def release(self, sha: str) -> None:
        self._inflight[sha] -= 1
        if not self._inflight[sha]:
            # A task, not an await: this also runs when a stream is abandoned.
            asyncio.get_running_loop().create_task(self._notify_slot_freed())

    async def unload(self, name: str) -> None:
        async with self._lock:
            spec = self._names.pop(name, None)
            if spec is None:
                loaded = ", ".join(self._names) or "none"
                raise AdapterNotFoundError(
                    f"Adapter {name!r} is not loaded on this server (loaded: {loaded})."
                )
            still_named = any(s.sha == spec.sha for s in self._names.values())
            if not still_named and not self._inflight[spec.sha] and spec.sha in self._resident:
                request = self._resident.pop(spec.sha)
                await self._llm.remove_lora(request.lora_int_id)

    def _touch(self, adapter: AdapterSpec) -> None:
        self._names[adapter.name] = adapter
        self._names.move_to_end(adapter.name)

    async def _ensure_resident(self, adapter: AdapterSpec) -> Any:
        from vllm.lora.request import LoRARequest

        request = self._resident.get(adapter.sha)
        if request is not None:
            self._resident.move_to_end(adapter.sha)
            self.counts["slot_hits"] += 1
            return request
        await self._make_room()
        request = LoRARequest(
            lora_name=f"{adapter.repo_id}@{adapter.sha}",
            lora_int_id=self.lora_int_id(adapter.sha),
            lora_path=str(adapter.path),
            base_model_name=self.base_name,
        )
        try:
            await self._llm.add_lora(request)
        except Exception as exc:  # vLLM's own loader refused it: keep the server up
            raise IncompatibleAdapterError(
                f"vLLM could not load adapter {adapter.name!r}", [f"{type(exc).__name__}: {exc}"]
            ) from exc
        self._resident[adapter.sha] = request
        self.counts["disk_loads"] += 1
        return request

    async def _make_room(self) -> None:
        """Evict idle adapters down to capacity; wait while every loaded one is busy."""
        while len(self._resident) >= self.capacity:
            idle = next((s for s in self._resident if not self._inflight[s]), None)
            if idle is None:
                await self._slot_freed.wait()
                continue
            request = self._resident.pop(idle)
            self.counts["evictions"] += 1
            for name in [n for n, s in self._names.items() if s.sha == idle]:
                del self._names[name]
            await self._llm.remove_lora(request.lora_int_id)

    async def _notify_slot_freed(self) -> None:
        async with self._slot_freed:
            self._slot_freed.notify_all()
