"""The adapter cache: each adapter read and checked once however many ask, a two-tier LRU by
(repo, sha), integer slots, pinned slots kept."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from loradock.errors import IncompatibleAdapterError
from loradock.serving.engines.base import AdapterSpec
from loradock.serving.engines.peft import adapter_cache as ac


def spec(i: int, folder, name: str | None = None) -> AdapterSpec:
    repo = f"acme/a{i}"
    return AdapterSpec(name=name or repo, repo_id=repo, sha=f"{i:040x}", path=folder, rank=4)


class FakeModel:
    """Records what the cache asks of the model: checks (parse) and slot writes (attach)."""

    def __init__(self, refuse: set[str] = frozenset()):
        self.refuse = refuse
        self.parsed: list[str] = []
        self.slots: dict[int, object] = {}  # slot -> the weights written there

    def parse(self, name, config, tensors):
        self.parsed.append(name)
        if name in self.refuse:
            raise IncompatibleAdapterError(f"Adapter {name!r} cannot be served", ["uses DoRA"])
        return {"q_proj": (tensors, None, 1.0)}

    def attach(self, slot, weights):
        self.slots[slot] = weights


def make_cache(
    model: FakeModel, max_loaded: int = 2, max_cpu: int = 3, max_cpu_bytes: int = 2**30
) -> ac.AdapterCache:
    return ac.AdapterCache(
        max_loaded=max_loaded,
        max_cpu=max_cpu,
        max_cpu_bytes=max_cpu_bytes,
        dtype=torch.float32,
        parse=model.parse,
        attach=model.attach,
    )


@pytest.fixture()
def folder(tiny_adapter_factory):
    return tiny_adapter_factory(seed=1)


def test_concurrent_fetches_read_and_check_once(folder, monkeypatch):
    model = FakeModel()
    cache = make_cache(model)
    both_reading = threading.Barrier(2, timeout=10)
    real = ac.read_adapter_files

    def read(s, dtype):
        both_reading.wait()  # a1 and a2 are read at the same time, in worker threads
        return real(s, dtype)

    monkeypatch.setattr(ac, "read_adapter_files", read)

    async def main():
        first, other = spec(1, folder), spec(2, folder)
        # Ten requests for a1, under two names (an alias and the plain repo), share one read.
        asks = [cache.fetch(spec(1, folder, name=f"acme/a1@{i % 2}")) for i in range(10)]
        return await asyncio.gather(cache.fetch(first), *asks, cache.fetch(other))

    results = asyncio.run(main())
    assert all(r is results[0] for r in results[:11])
    assert sorted(model.parsed) == ["acme/a1", "acme/a2"]  # one check per (repo, sha)
    assert cache.stats["disk_loads"] == 2 and cache.stats["load_waits"] == 10
    assert asyncio.run(cache.fetch(spec(1, folder))) is results[0]  # a CPU hit: no read
    assert len(model.parsed) == 2 and cache.stats["cpu_hits"] == 1


@pytest.mark.parametrize(
    ("steps", "attached", "evictions"),
    [
        # LRU: the hit on a0 makes a1 the least recently used, and a2 takes its slot
        ([("attach", 0, 1), ("attach", 1, 2), ("attach", 0, 1), ("attach", 2, 2)], {0, 2}, 1),
        # every slot pinned: a2 waits (None), then takes the slot unpinned first
        ([("attach", 0, 1), ("pin", 0, None), ("attach", 1, 2), ("pin", 1, None),
          ("attach", 2, None), ("unpin", 1, None), ("attach", 2, 2)], {0, 2}, 1),
        # a forgotten adapter frees its slot: the next one takes it, no eviction
        ([("attach", 0, 1), ("attach", 1, 2), ("forget", 0, None), ("attach", 2, 1)], {1, 2}, 0),
        # a forgotten adapter that a sequence still uses keeps its slot until it is unpinned
        ([("attach", 0, 1), ("pin", 0, None), ("forget", 0, None), ("attach", 1, 2),
          ("pin", 1, None), ("attach", 2, None)], {0, 1}, 0),
    ],
    ids=["lru", "pins", "forget-frees", "forget-pinned"],
)  # fmt: skip
def test_slots(folder, steps, attached, evictions):
    model = FakeModel()
    cache = make_cache(model, max_loaded=2, max_cpu=8)
    adapters = [asyncio.run(cache.fetch(spec(i, folder))) for i in range(3)]
    for op, i, want in steps:
        key = adapters[i].key
        if op == "attach":
            assert cache.try_attach(adapters[i]) == want, (op, i)
        else:
            getattr(cache, op)(key)
    assert {s.name for s in cache.attached()} == {f"acme/a{i}" for i in attached}
    for i in attached:  # each attached adapter's weights are the ones in its slot
        assert model.slots[cache.try_attach(adapters[i])] is adapters[i].weights
    assert cache.stats["evictions"] == evictions


@pytest.mark.parametrize(
    ("max_cpu", "max_adapters_of_bytes", "kept"),
    [
        (3, 10.0, (2, 3, 4)),  # the count binds
        (8, 2.5, (3, 4)),  # the bytes bind: two adapters' worth fit
        (2, 2.0, (3, 4)),  # both at once
        (8, 0.5, ()),  # one adapter is over the whole tier: none is kept
    ],
    ids=["count", "bytes", "both", "over-the-tier"],
)
def test_cpu_tier_is_capped_lru_by_count_and_bytes(folder, max_cpu, max_adapters_of_bytes, kept):
    one = asyncio.run(make_cache(FakeModel()).fetch(spec(0, folder))).nbytes
    cache = make_cache(FakeModel(), max_cpu=max_cpu, max_cpu_bytes=int(one * max_adapters_of_bytes))
    fetched = [asyncio.run(cache.fetch(spec(i, folder))) for i in range(5)]
    assert all(a.nbytes == one for a in fetched)  # each still served whoever asked for it
    assert cache.in_memory() == [ac.adapter_key(spec(i, folder)) for i in kept]
    assert cache.cpu_bytes() == one * len(kept)
    assert cache.stats["cpu_evictions"] == 5 - len(kept)
    if kept:
        cache.forget(ac.adapter_key(spec(kept[0], folder)))
        assert cache.cpu_bytes() == one * (len(kept) - 1)


@pytest.mark.parametrize(
    ("failure", "error"),
    [("check", IncompatibleAdapterError), ("read", FileNotFoundError)],
)
def test_failed_read_is_not_cached(folder, monkeypatch, failure, error):
    model = FakeModel(refuse={"acme/a1"} if failure == "check" else set())
    cache = make_cache(model)
    if failure == "read":

        def missing(s, dtype):
            raise FileNotFoundError("adapter_model.safetensors")

        monkeypatch.setattr(ac, "read_adapter_files", missing)

    async def main():
        asks = [cache.fetch(spec(1, folder)) for _ in range(3)]
        return await asyncio.gather(*asks, return_exceptions=True)

    assert all(isinstance(r, error) for r in asyncio.run(main()))  # every waiter gets it
    assert cache.in_memory() == []
    with pytest.raises(error):  # a later request reads again and gets its own error
        asyncio.run(cache.fetch(spec(1, folder)))
    assert cache.stats["disk_loads"] == 0


def test_failed_attach_keeps_the_slot_free(folder):
    model = FakeModel()
    cache = make_cache(model, max_loaded=1)
    a0, a1 = (asyncio.run(cache.fetch(spec(i, folder))) for i in range(2))

    def broken(slot, weights):
        raise RuntimeError("out of memory")

    cache._attach = broken
    with pytest.raises(RuntimeError):
        cache.try_attach(a0)
    cache._attach = model.attach
    assert cache.try_attach(a1) == 1 and cache.stats["evictions"] == 0
