"""Load: 200 requests over 50 adapters with 8 slots; nothing fails, memory stays bounded."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from bench.serving_setup import PeakRss  # server + engine process RSS, sampled
from tests.helpers.serving import API_KEY, BASE_ID, publish_fixture_registry, start_server

N_ADAPTERS, N_REQUESTS, CONCURRENCY, SLOTS, CPU_TIER = 50, 200, 32, 8, 16


@pytest.fixture(scope="module")
def many_adapters(tmp_path_factory, tiny_base, tiny_adapter_factory):
    root = tmp_path_factory.mktemp("load-registry")
    return publish_fixture_registry(root, tiny_base, tiny_adapter_factory(seed=1), n=N_ADAPTERS)


@pytest.mark.slow
def test_200_requests_over_50_adapters(engine_kind, many_adapters, capsys):
    server, app = start_server(
        engine_kind,
        many_adapters,
        adapters={},
        max_loaded=SLOTS,
        max_cpu_adapters=CPU_TIER,
        max_batch_size=32,
        max_model_len=128,
    )
    rng = random.Random(0)
    models = [rng.choice([BASE_ID, *many_adapters.adapters]) for _ in range(N_REQUESTS)]
    try:
        from openai import AsyncOpenAI

        async def run():
            limit = asyncio.Semaphore(CONCURRENCY)
            async with AsyncOpenAI(
                base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120
            ) as client:

                async def one(model):
                    async with limit:
                        return await client.completions.create(
                            model=model, prompt="Convert 3 March 2024:", max_tokens=12
                        )

                return await asyncio.gather(*(one(m) for m in models), return_exceptions=True)

        started = time.perf_counter()
        with PeakRss() as rss:
            results = asyncio.run(run())
        elapsed = time.perf_counter() - started
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert all(r.usage.completion_tokens >= 1 for r in results)

        auth = {"Authorization": f"Bearer {API_KEY}"}  # /health shows adapters to key holders
        health = httpx.get(f"{server.url}/health", headers=auth).json()
        stats = app.state.loradock.engine.stats()
        engine = app.state.loradock.engine
        if engine_kind == "vllm":
            # vLLM: SLOTS adapters per batch; what the engine keeps loaded (and reports) is
            # vLLM's host cache, sized from the registry's adapters up to --max-cpu-adapters.
            assert engine.limits.max_loras == SLOTS
            assert engine.capabilities.max_loaded == CPU_TIER
        else:
            assert engine.capabilities.max_loaded == SLOTS
        assert len(health["loaded_adapters"]) <= engine.capabilities.max_loaded
        assert stats["adapters_attached"] <= engine.capabilities.max_loaded
        assert stats["adapters_in_cpu"] <= CPU_TIER  # the CPU tier is capped too
        assert stats["adapter_evictions"] > 0
        growth_mb = (rss.peak - rss.start) / 2**20
        # Bounded: tiny adapters are ~10 KB each; what grows is the KV cache of one batch.
        assert growth_mb < 400, growth_mb
        with capsys.disabled():
            print(
                f"\n[load] {N_REQUESTS} requests over {len(set(models))} models, "
                f"{SLOTS} slots: {elapsed:.1f}s, {N_REQUESTS / elapsed:.1f} req/s, "
                f"peak RSS {rss.peak / 2**20:.0f} MiB (+{growth_mb:.0f} MiB during the run), "
                f"evictions {stats['adapter_evictions']:.0f}, disk loads "
                f"{stats['adapter_disk_loads']:.0f}, max batch {stats['batch_max_batch_seen']:.0f}"
            )
    finally:
        server.stop()
