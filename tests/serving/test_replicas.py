"""Replicas behind one endpoint (``serving/scale/``): 2 Ray Serve replicas of the tiny model.

One local Ray cluster and one application for the module (Ray is heavy on 2 cores); the test
that kills a replica runs last. The config table and the no-Ray check need no cluster.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.ray_cluster import replicas_app
from tests.helpers.serving import API_KEY, BASE_ID, publish_fixture_registry

N_ADAPTERS, SLOTS = 8, 4
PROMPT = "Date: Oct 1 2003"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"replicas": 2}, None),
        ({"replicas": 2, "max_replicas": 4, "target_ongoing_requests": 8}, None),
        ({"replicas": 0}, "replicas=0 must be an integer >= 1"),
        ({"ray_address": "ray://head:10001"}, "--replicas is not given"),
        ({"replicas": 3, "max_replicas": 2}, "must lie between"),
        ({"replicas": 2, "target_ongoing_requests": 0}, "must be a number > 0"),
        ({"replicas": 2, "restart_backoff_s": 2.0}, "Ray replaces a dead replica"),
        ({"replicas": 2, "engine": "vllm"}, None),
        ({"replicas": 2, "merged": True}, "drop --merged"),
    ],
)
def test_scale_options_are_checked(options, problem):
    from loradock.errors import ConfigError
    from loradock.serving.config import ServerConfig

    if problem is None:
        assert ServerConfig.from_options(base=BASE_ID, **options).scale.replicas == 2
        return
    with pytest.raises(ConfigError, match=problem):
        ServerConfig.from_options(base=BASE_ID, **options)


def test_replicas_flag_serves_on_ray(monkeypatch):
    """``--replicas`` hands the config to the Ray Serve application, not to uvicorn."""
    from typer.testing import CliRunner

    from loradock.cli import app

    seen = []
    monkeypatch.setattr("loradock.serving.scale.app.serve_replicas", seen.append)
    monkeypatch.setattr("loradock.serving.server.serve", lambda config: seen.append(None))
    args = ["serve", "--base", BASE_ID, "--replicas", "2", "--max-replicas", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [c.scale.autoscaling()["max_replicas"] for c in seen] == [3]


def test_one_process_server_never_imports_ray(registry, tiny_base):
    """``loradock serve`` without ``--replicas`` builds its app (uvicorn stubbed) without Ray."""
    from loradock.registry.card import build_base_card

    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    script = textwrap.dedent(
        f"""
        import sys, uvicorn
        uvicorn.run = lambda app, **kw: print("ray imported:", "ray" in sys.modules)
        from loradock.cli import app
        app(["serve", "--base", "{BASE_ID}", "--in-process", "--port", "0"],
            standalone_mode=False)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert "ray imported: False" in out.stdout, out.stdout + out.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_base, tiny_adapter_factory):
    """A local Ray cluster serving 2 replicas of tiny/base (4 slots each) over 8 adapters."""
    pytest.importorskip("ray")
    published = publish_fixture_registry(
        tmp_path_factory.mktemp("replicas"), tiny_base, tiny_adapter_factory(), N_ADAPTERS
    )
    env = {"LORADOCK_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with replicas_app(
        published.registry.settings,
        num_cpus=2,
        env=env,
        replicas=2,
        max_loaded=SLOTS,
        max_cpu_adapters=SLOTS,  # every slot miss is a read from disk: what is counted
        dtype="float32",
        torch_threads=1,
    ) as url:
        yield published, url


def _client(url: str, key: str = API_KEY):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


async def _complete(client, model: str, max_tokens: int = 4, **kw):
    return await client.completions.create(
        model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0, **kw
    )


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


@pytest.mark.slow
def test_each_adapter_is_loaded_about_once(cluster):
    import httpx

    published, url = cluster

    def loads() -> float:
        return _metric(httpx.get(f"{url}/metrics", timeout=30).text, "loradock_adapter_loads_total")

    async def warm_up():
        async with _client(url) as client:
            for repo in published.adapters:  # one request each, placement learnt
                await _complete(client, repo)
                # Replicas advertise their ids to Ray's routers every 0.1 s: each placement
                # is known before the next adapter's first request picks a replica.
                await asyncio.sleep(0.5)
            await asyncio.gather(*(_complete(client, r) for r in published.adapters))

    async def rounds():
        async with _client(url) as client:
            for _ in range(3):
                await asyncio.gather(*(_complete(client, r) for r in published.adapters))

    asyncio.run(warm_up())
    warm = loads()
    assert warm >= N_ADAPTERS  # every adapter was loaded somewhere
    asyncio.run(rounds())
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    # After warm-up each adapter's requests go where it is loaded: 24 more requests over 8
    # adapters reload at most a quarter of them (round-robin reloads most: the bench).
    assert loads() - warm <= 0.25 * N_ADAPTERS, metrics
    per_replica = [
        line for line in metrics.splitlines() if line.startswith("loradock_replica_adapter_loads")
    ]
    assert len(per_replica) == 2, metrics  # both replicas served, each shown


@pytest.mark.slow
def test_streaming_and_keys_through_the_ingress(cluster):
    import openai

    published, url = cluster
    model = f"{published.adapters[1]}@prod"

    async def run():
        async with _client(url) as client:
            whole = await _complete(client, model)
            stream = await _complete(client, model, stream=True)
            pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
        async with _client(url, key="sk-wrong-key-0123456789") as stranger:
            with pytest.raises(openai.AuthenticationError):
                await _complete(stranger, model)
        return whole.choices[0].text, pieces

    text, pieces = asyncio.run(run())
    assert len(pieces) > 1 and "".join(pieces) == text


@pytest.mark.slow
def test_a_killed_replica_leaves_no_request_hanging(cluster):
    """In-flight requests on the killed replica may fail (503), never hang; later ones pass."""
    import httpx
    import ray

    published, url = cluster

    async def burst(n: int) -> list[int]:
        models = [published.adapters[i % N_ADAPTERS] for i in range(n)]
        async with _client(url) as client:
            calls = [_complete(client, m, max_tokens=32) for m in models]
            gathered = asyncio.gather(*calls, return_exceptions=True)
            results = await asyncio.wait_for(gathered, 180)
        return [
            200 if not isinstance(r, Exception) else getattr(r, "status_code", repr(r))
            for r in results
        ]

    async def run():
        during = asyncio.create_task(burst(16))
        await asyncio.sleep(0.5)
        names = ray.util.list_named_actors(all_namespaces=True)
        engine = next(a for a in names if "engine" in a["name"] and "REPLICA" in a["name"])
        ray.kill(ray.get_actor(engine["name"], namespace=engine["namespace"]), no_restart=True)
        return engine["name"].rpartition("#")[2], await during, await burst(16)

    killed, during, after = asyncio.run(run())
    assert set(during) <= {200, 503}, during
    assert after == [200] * 16
    # The dead replica's series leave /metrics; the live ones (its replacement included) stay.
    shown = {
        line.split('replica="', 1)[1].split('"', 1)[0]
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
        if line.startswith("loradock_replica_adapters_loaded{")
    }
    assert shown and killed not in shown, (killed, shown)
