"""The tiered cache: one disk read per adapter however many ask, LRU slots, pinned slots kept."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from loradock.serving.engines.base import AdapterSpec
from loradock.serving.engines.peft import adapter_cache as ac


def spec(i: int, folder) -> AdapterSpec:
    return AdapterSpec(
        name=f"acme/a{i}", repo_id=f"acme/a{i}", sha=f"{i:040x}", path=folder, rank=4
    )


class FakeModel:
    """Records what the cache asks the model thread to do."""

    def __init__(self):
        self.attached: dict[str, str] = {}  # slot -> adapter key
        self.calls: list[tuple] = []

    def attach(self, slot, adapter, reuse):
        self.calls.append(("attach", slot, adapter.key, reuse))
        self.attached[slot] = adapter.key

    def detach(self, slot):
        self.calls.append(("detach", slot))
        del self.attached[slot]


@pytest.fixture()
def cache_and_model(tiny_adapter_factory):
    model = FakeModel()
    cache = ac.AdapterCache(
        max_loaded=2, max_cpu=3, dtype=torch.float32, attach=model.attach, detach=model.detach
    )
    return cache, model, tiny_adapter_factory(seed=1)


def test_concurrent_fetches_read_disk_once(cache_and_model, monkeypatch):
    cache, _, folder = cache_and_model
    reads = []
    real = ac.read_adapter_from_disk

    def slow_read(s, dtype):
        reads.append(threading.current_thread().name)
        time.sleep(0.2)
        return real(s, dtype)

    monkeypatch.setattr(ac, "read_adapter_from_disk", slow_read)

    async def main():
        a = spec(1, folder)
        other = spec(2, folder)
        started = time.perf_counter()
        results = await asyncio.gather(*[cache.fetch(a) for _ in range(10)], cache.fetch(other))
        return results, time.perf_counter() - started

    results, elapsed = asyncio.run(main())
    assert len(reads) == 2  # ten requests for a1 share one read; a2 reads in parallel
    assert all(r is results[0] for r in results[:10])
    assert elapsed < 0.39  # the two reads overlapped (worker threads), not one after another
    assert cache.stats["disk_loads"] == 2 and cache.stats["load_waits"] == 9


def test_slots_lru_reuse_and_pins(cache_and_model):
    cache, model, folder = cache_and_model
    adapters = [asyncio.run(cache.fetch(spec(i, folder))) for i in range(4)]
    assert cache.try_attach(adapters[0]) and cache.try_attach(adapters[1])
    assert cache.try_attach(adapters[0])  # hit: a0 becomes most recent
    cache.pin(adapters[0].key)
    assert cache.try_attach(adapters[2])  # evicts a1 (LRU, unpinned), same shape: copy in place
    assert model.calls[-1] == ("attach", cache.slot_of(adapters[2].key), adapters[2].key, True)
    assert {s.name for s in cache.attached()} == {"acme/a0", "acme/a2"}
    cache.pin(adapters[2].key)
    assert not cache.try_attach(adapters[3])  # every slot pinned: wait, never evict a user
    cache.unpin(adapters[2].key)
    assert cache.try_attach(adapters[3])
    assert adapters[0].key in {ac.adapter_key(s) for s in cache.attached()}  # pinned: kept
    assert len(model.attached) == 2
    assert cache.stats["evictions"] == 2 and cache.stats["slot_reuses"] == 2


def test_cpu_tier_is_capped_and_forget(cache_and_model):
    cache, model, folder = cache_and_model
    for i in range(5):
        asyncio.run(cache.fetch(spec(i, folder)))
    assert len(cache.in_memory()) == 3 and cache.stats["cpu_evictions"] == 2
    a4 = asyncio.run(cache.fetch(spec(4, folder)))
    assert cache.stats["cpu_hits"] == 1
    cache.try_attach(a4)
    assert cache.forget(a4.key)
    assert not model.attached and a4.key not in cache.in_memory()


def test_shape_differs_means_fresh_slot(cache_and_model, tiny_adapter_factory):
    cache, model, folder = cache_and_model
    bigger = tiny_adapter_factory(seed=3, r=8)
    a = [asyncio.run(cache.fetch(spec(i, folder))) for i in range(2)]
    b = asyncio.run(cache.fetch(spec(9, bigger)))
    cache.try_attach(a[0])
    cache.try_attach(a[1])
    cache.try_attach(b)
    assert ("detach", "slot0") in model.calls or ("detach", "slot1") in model.calls
    assert model.calls[-1][-1] is False  # a new adapter was added, not copied into
