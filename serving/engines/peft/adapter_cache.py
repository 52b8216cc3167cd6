"""The tiered adapter cache: model slots, then CPU memory, then the registry's disk snapshots.

- **slots** (``max_loaded``): adapters attached to the PEFT model (as ``slot0``, ``slot1``...),
  usable in a forward pass; a new adapter of the same shape is copied into an evicted slot.
  Only the model thread touches them (attaching mutates the model), between decode steps.
  A slot in use by a running sequence is pinned and never evicted.
- **CPU** (``max_cpu``): state dicts read from disk and cast to the model's dtype, so a
  re-attach after eviction costs a memory copy, not a disk read.
- **disk**: the registry's verified snapshot (``AdapterSpec.path``).

Each tier evicts its least recently used entry. Concurrent requests for an adapter that is not
in memory share one load (one future per adapter), and the disk read runs in a worker thread
so requests for other adapters keep decoding meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loradock.serving.engines.base import AdapterSpec


def adapter_key(spec: AdapterSpec) -> str:
    """The adapter's name inside the model: one per (repo, commit), whatever alias asked for it.

    Module names cannot hold '.', '/' or '@', so the key is a digest, not the registry name.
    """
    digest = hashlib.sha1(f"{spec.repo_id}@{spec.sha}".encode()).hexdigest()[:16]
    return f"lora_{digest}"


@dataclass
class CpuAdapter:
    spec: AdapterSpec
    config: Any  # peft.LoraConfig
    state_dict: dict[str, Any]
    nbytes: int

    @property
    def key(self) -> str:
        return adapter_key(self.spec)

    @property
    def shape(self) -> tuple:
        """Adapters of equal shape can take each other's slot by copying weights in place."""
        c = self.config
        targets = (
            c.target_modules if isinstance(c.target_modules, str) else sorted(c.target_modules)
        )
        return (
            c.r,
            c.lora_alpha,
            bool(c.use_rslora),
            bool(getattr(c, "use_dora", False)),
            str(targets),
            tuple(sorted((c.rank_pattern or {}).items())),
            tuple(sorted((c.alpha_pattern or {}).items())),
            tuple(sorted((k, tuple(v.shape)) for k, v in self.state_dict.items())),
        )


@dataclass
class Slot:
    name: str  # the adapter's name inside the PEFT model
    spec: AdapterSpec
    shape: tuple


def read_adapter_from_disk(spec: AdapterSpec, dtype: Any) -> CpuAdapter:
    """Read a PEFT adapter folder (safetensors only) into CPU memory."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(spec.path))
    config.inference_mode = True
    tensors = load_file(str(spec.path / "adapter_model.safetensors"))
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return CpuAdapter(spec=spec, config=config, state_dict=tensors, nbytes=nbytes)


class AdapterCache:
    """Slots + CPU tier bookkeeping; ``attach``/``detach`` do the model work (model thread)."""

    def __init__(
        self,
        *,
        max_loaded: int,
        max_cpu: int,
        dtype: Any,
        attach: Callable[[str, CpuAdapter, bool], None],
        detach: Callable[[str], None],
    ):
        self.max_loaded = max_loaded
        self.max_cpu = max(max_cpu, 0)
        self.dtype = dtype
        self._attach = attach
        self._detach = detach
        self._lock = threading.Lock()
        self._cpu: OrderedDict[str, CpuAdapter] = OrderedDict()
        self._slots: OrderedDict[str, Slot] = OrderedDict()  # adapter key -> slot, LRU first
        self._free: list[str] = []  # slot names deleted from the model, to be reused
        self._pins: Counter[str] = Counter()
        self._loading: dict[str, asyncio.Future[CpuAdapter]] = {}
        self.stats: Counter[str] = Counter()

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
        """The adapter in CPU memory, reading it from disk once however many ask at once."""
        hit = self.peek(spec)
        if hit is not None:
            return hit
        key = adapter_key(spec)
        pending = self._loading.get(key)
        if pending is not None:
            self.stats["load_waits"] += 1
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CpuAdapter] = loop.create_future()
        self._loading[key] = future
        try:
            adapter = await loop.run_in_executor(None, read_adapter_from_disk, spec, self.dtype)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(key, None)
        self.stats["disk_loads"] += 1
        with self._lock:
            self._cpu[key] = adapter
            self._trim_cpu()
        future.set_result(adapter)
        return adapter

    def _trim_cpu(self) -> None:
        # Requests waiting for a slot hold their own reference, so dropping here is safe.
        while len(self._cpu) > self.max_cpu:
            self._cpu.popitem(last=False)
            self.stats["cpu_evictions"] += 1

    # ---- slots (model thread) -------------------------------------------------------------
    def slot_of(self, key: str) -> str:
        """The PEFT adapter name (``slot3``) that holds adapter ``key`` now."""
        return self._slots[key].name

    def try_attach(self, adapter: CpuAdapter) -> bool:
        """Make ``adapter`` usable now; False when every slot is pinned by running sequences.

        Evicting into a slot of the same shape copies the weights in place (a few ms);
        otherwise the old adapter is deleted and a new one added to the model.
        """
        key = adapter.key
        if key in self._slots:
            self._slots.move_to_end(key)
            self.stats["slot_hits"] += 1
            return True
        reuse: Slot | None = None
        if len(self._slots) >= self.max_loaded:
            unpinned = [k for k in self._slots if self._pins[k] == 0]
            if not unpinned:
                return False
            shape = adapter.shape
            victim = next((k for k in unpinned if self._slots[k].shape == shape), unpinned[0])
            slot = self._slots.pop(victim)
            self.stats["evictions"] += 1
            if slot.shape == shape:
                reuse = slot
            else:
                self._detach(slot.name)
                self._free.append(slot.name)
        if reuse is not None:
            name = reuse.name
        else:
            name = self._free.pop() if self._free else f"slot{len(self._slots)}"
            while any(s.name == name for s in self._slots.values()):
                name = f"slot{int(name[4:]) + 1}"
        try:
            self._attach(name, adapter, reuse is not None)
        except Exception:
            self._free.append(name)  # the slot stays usable for the next adapter
            raise
        if reuse is not None:
            self.stats["slot_reuses"] += 1
        self._slots[key] = Slot(name=name, spec=adapter.spec, shape=adapter.shape)
        self.stats["attaches"] += 1
        return True

    def pin(self, name: str) -> None:
        self._pins[name] += 1
        if name in self._slots:
            self._slots.move_to_end(name)

    def unpin(self, name: str) -> None:
        self._pins[name] -= 1
        if self._pins[name] <= 0:
            del self._pins[name]

    def forget(self, name: str) -> bool:
        """Drop an adapter (by key) from the CPU tier and, if no sequence uses it, its slot."""
        found = False
        with self._lock:
            found = self._cpu.pop(name, None) is not None
        if name in self._slots and self._pins[name] == 0:
            slot = self._slots.pop(name)
            self._detach(slot.name)
            self._free.append(slot.name)
            found = True
        return found

    def attached(self) -> list[AdapterSpec]:
        return [slot.spec for slot in self._slots.values()]

    def in_memory(self) -> list[str]:
        with self._lock:
            return list(self._cpu)
