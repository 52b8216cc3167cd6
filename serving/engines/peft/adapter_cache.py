"""The adapter cache: a two-tier LRU keyed by (repo_id, sha), over the registry's disk snapshots.

- **slots** (``max_loaded``): adapters copied into the model's stacked LoRA weights, usable in
  a forward pass. A slot is an integer index (1..max_loaded; row 0 of the stacks is the base).
  Only the model thread touches them (attaching writes the weights), between steps. A slot
  whose adapter a running sequence uses is pinned and never evicted.
- **CPU** (``max_cpu`` adapters and ``max_cpu_bytes`` of tensors, the least recently used
  evicted until both hold): adapters read from disk, cast to the model's dtype and parsed into
  ``{module: (A, B, scale)}``, so attaching after an eviction costs a memory copy. An adapter
  larger than ``max_cpu_bytes`` alone still serves the requests that asked for it, and is read
  again next time.

Each adapter is read, parsed and checked (``parse``, which raises an
``IncompatibleAdapterError`` listing every problem) exactly once, in a worker thread, so other
requests keep decoding meanwhile; concurrent requests for an adapter not in memory share that
one read (one future per key), and a read that fails fails only the requests waiting on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loradock.serving.engines.base import AdapterSpec
from loradock.serving.engines.peft.limits import MAX_CPU_ADAPTER_BYTES

AdapterKey = tuple[str, str]  # (repo_id, sha): one entry per commit, whatever alias asked
# module path -> (A [r, in], B [out, r], scale): what MultiLora.parse returns
ParsedWeights = dict[str, tuple[Any, Any, float]]
STAT_NAMES = (
    "disk_loads",
    "load_waits",
    "cpu_hits",
    "cpu_evictions",
    "slot_hits",
    "attaches",
    "evictions",
)


def adapter_key(spec: AdapterSpec) -> AdapterKey:
    return spec.repo_id, spec.sha


@dataclass(frozen=True)
class CpuAdapter:
    """An adapter in CPU memory, already checked against the model."""

    spec: AdapterSpec
    weights: ParsedWeights
    nbytes: int

    @property
    def key(self) -> AdapterKey:
        return adapter_key(self.spec)


def read_adapter_files(spec: AdapterSpec, dtype: Any) -> tuple[Any, dict[str, Any]]:
    """A PEFT adapter folder (safetensors only): its ``LoraConfig`` and its tensors in ``dtype``."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(spec.path))
    tensors = load_file(str(spec.path / "adapter_model.safetensors"))
    return config, {k: v.to(dtype) for k, v in tensors.items()}


class AdapterCache:
    """Both tiers' bookkeeping. ``parse(name, config, tensors)`` checks and splits an adapter
    (worker thread); ``attach(slot, weights)`` writes it into a slot (model thread)."""

    def __init__(
        self,
        *,
        max_loaded: int,
        max_cpu: int,
        max_cpu_bytes: int = MAX_CPU_ADAPTER_BYTES,
        dtype: Any,
        parse: Callable[[str, Any, dict[str, Any]], ParsedWeights],
        attach: Callable[[int, ParsedWeights], None],
    ):
        self.max_cpu = max_cpu
        self.max_cpu_bytes = max_cpu_bytes
        self._cpu_bytes = 0  # the CPU tier's adapters' tensors, summed
        self.dtype = dtype
        self._parse = parse
        self._attach = attach
        self._lock = threading.Lock()  # the CPU tier: the event loop writes, stats read
        self._cpu: OrderedDict[AdapterKey, CpuAdapter] = OrderedDict()
        self._slots: OrderedDict[AdapterKey, tuple[int, AdapterSpec]] = OrderedDict()  # LRU first
        self._free = list(range(max_loaded, 0, -1))  # slot indices never used yet, 1 first
        self._pins: Counter[AdapterKey] = Counter()
        self._reading: dict[AdapterKey, asyncio.Future[CpuAdapter]] = {}
        # Every name set up front: another thread may read these while one is counted.
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    # ---- CPU tier (event-loop side) -------------------------------------------------------
    def peek(self, spec: AdapterSpec) -> CpuAdapter | None:
        """The adapter if it is in CPU memory now (a hit, counted), else None: no waiting."""
        key = adapter_key(spec)
        with self._lock:
            hit = self._cpu.get(key)
            if hit is not None:
                self._cpu.move_to_end(key)
                self.stats["cpu_hits"] += 1
            return hit

    async def fetch(self, spec: AdapterSpec) -> CpuAdapter:
        """The adapter in CPU memory, read and checked once however many ask at once."""
        hit = self.peek(spec)
        if hit is not None:
            return hit
        key = adapter_key(spec)
        pending = self._reading.get(key)
        if pending is not None:
            self.stats["load_waits"] += 1
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CpuAdapter] = loop.create_future()
        self._reading[key] = future
        try:
            adapter = await loop.run_in_executor(None, self._read, spec)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._reading.pop(key, None)
        self.stats["disk_loads"] += 1
        with self._lock:
            self._cpu[key] = adapter
            self._cpu_bytes += adapter.nbytes
            while self._cpu and (
                len(self._cpu) > self.max_cpu or self._cpu_bytes > self.max_cpu_bytes
            ):
                # Requests waiting for a slot hold their own reference: dropping here is safe.
                _, dropped = self._cpu.popitem(last=False)
                self._cpu_bytes -= dropped.nbytes
                self.stats["cpu_evictions"] += 1
        future.set_result(adapter)
        return adapter

    def _read(self, spec: AdapterSpec) -> CpuAdapter:
        config, tensors = read_adapter_files(spec, self.dtype)
        weights = self._parse(spec.name, config, tensors)
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        return CpuAdapter(spec=spec, weights=weights, nbytes=nbytes)

    # ---- slots (model thread) -------------------------------------------------------------
    def try_attach(self, adapter: CpuAdapter) -> int | None:
        """The slot holding ``adapter`` now, attaching it if needed (into a free slot, else
        the least recently used unpinned one); None when every slot is pinned."""
        key = adapter.key
        held = self._slots.get(key)
        if held is not None:
            self._slots.move_to_end(key)
            self.stats["slot_hits"] += 1
            return held[0]
        if self._free:
            slot = self._free.pop()
        else:
            victim = next((k for k in self._slots if self._pins[k] == 0), None)
            if victim is None:
                return None
            slot, _ = self._slots.pop(victim)
            self.stats["evictions"] += 1
        try:
            self._attach(slot, adapter.weights)
        except Exception:
            self._free.append(slot)  # the slot stays usable for the next adapter
            raise
        self._slots[key] = (slot, adapter.spec)
        self.stats["attaches"] += 1
        return slot

    def pin(self, key: AdapterKey) -> None:
        self._pins[key] += 1
        self._slots.move_to_end(key)

    def unpin(self, key: AdapterKey) -> None:
        self._pins[key] -= 1
        if self._pins[key] <= 0:
            del self._pins[key]

    def forget(self, key: AdapterKey) -> None:
        """Drop an adapter from the CPU tier and, if no sequence uses it, its slot (whose
        weights the next attach there overwrites)."""
        with self._lock:
            dropped = self._cpu.pop(key, None)
            self._cpu_bytes -= dropped.nbytes if dropped is not None else 0
        if key in self._slots and self._pins[key] == 0:
            slot, _ = self._slots.pop(key)
            self._free.append(slot)

    # ---- views (any thread) ---------------------------------------------------------------
    def attached(self) -> list[AdapterSpec]:
        return [spec for _, spec in list(self._slots.values())]

    def in_memory(self) -> list[AdapterKey]:
        with self._lock:
            return list(self._cpu)

    def cpu_bytes(self) -> int:
        """The CPU tier's adapters' tensors, in bytes."""
        return self._cpu_bytes
