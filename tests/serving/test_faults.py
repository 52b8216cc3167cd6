"""The serving fault table: each fault with its expected outcome, on live servers.

Two servers per module: the PEFT engine in its own process (what ``loradock serve`` runs:
killed with SIGKILL, restarted by its supervisor) and in the server's process (where a forward
pass can be made to raise or to crawl, by patching its runner). Each case leaves its server
serving: the next requests of every case are the proof.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers.serving import ADMIN_KEY, API_KEY, BASE_ID, start_server

PROMPT = "Convert the date 3 March 2024 to ISO format:"
LONG = 400  # tokens: a generation that is still running when a fault lands
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OPTIONS = dict(max_loaded=2, max_model_len=512, max_batch_size=8)


@dataclass
class Servers:
    process: object
    inproc: object
    published: object

    def of(self, kind: str):
        return self.process if kind == "process" else self.inproc


@pytest.fixture(scope="module")
def servers(published):
    process, process.app = start_server(
        "peft-process",
        published,
        restart_backoff_s=0.05,
        crash_loop_deaths=2,  # the kill mid-batch, then the crash loop's: no third start
        crash_loop_window_s=600.0,
        **OPTIONS,
    )
    inproc, inproc.app = start_server("peft", published, request_timeout=4.0, **OPTIONS)
    try:
        yield Servers(process, inproc, published)
    finally:
        process.stop()
        inproc.stop()


def _engine(server):
    return server.app.state.loradock.engine


def _complete(server, model: str = BASE_ID, *, max_tokens: int = 4, timeout: float = 60, **kw):
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, **kw}
    return httpx.post(f"{server.url}/v1/completions", json=body, headers=AUTH, timeout=timeout)


def _wait(condition: Callable[[], bool], seconds: float = 180) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass (a restart on a busy 2-core
    machine: up to a minute to import torch again)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _idle(server) -> bool:
    """No sequence left running or queued (a request brings a fresh snapshot of a child's)."""
    stats = _engine(server).stats()
    return stats.get("running", 1) == 0 and stats.get("queue_depth", 1) == 0


def _pins(server) -> int:
    return sum(_engine(server)._cache._pins.values())


def _stream_then(server, model: str, action: Callable[[], None], n: int = 4) -> list[dict]:
    """``n`` long streams for ``model``; ``action`` runs once each has its first token. Each
    stream's outcome: its status and the error event it ended with, if any."""
    started = threading.Barrier(n + 1, timeout=60)
    outcomes: list[dict] = []

    def one() -> None:
        body = {"model": model, "prompt": PROMPT, "max_tokens": LONG, "stream": True}
        with httpx.stream(
            "POST", f"{server.url}/v1/completions", json=body, headers=AUTH, timeout=60
        ) as response:
            lines = response.iter_lines()
            first = next(lines, "")
            started.wait()
            rest = [line for line in lines if line.startswith('data: {"error"')]
            outcomes.append({"status": response.status_code, "first": first, "error": rest})

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    started.wait()
    action()
    for t in threads:
        t.join(timeout=60)
    return outcomes


# ---- the engine process killed --------------------------------------------------------------
def _kill(server) -> None:
    os.kill(_engine(server).pid, signal.SIGKILL)


def kill_mid_batch(servers: Servers) -> None:
    server, adapter = servers.process, servers.published.adapters[2]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = f"{server.url}/v1/adapters/load"
    loaded = httpx.post(url, json={"model": adapter}, headers=admin, timeout=60)
    assert loaded.status_code == 200, loaded.text
    assert _complete(server, "dates").status_code == 200  # attached on demand, by its alias
    engine = _engine(server)
    restarts = engine.supervisor.restarts
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        whole = [pool.submit(_complete, server, adapter, max_tokens=LONG) for _ in range(2)]
        outcomes = _stream_then(server, adapter, lambda: _kill(server))
        # in flight at the kill: 503 (an error event once streaming), never a hang
        assert len(outcomes) == 4
        assert all(o["error"] and "engine_unavailable" in o["error"][0] for o in outcomes)
        for future in whole:
            assert future.result().status_code == 503
            _assert_retry_after(future.result())
    # arriving while it restarts (a new process takes seconds to load): 503, when to retry
    assert engine.restarting is not None
    refused = _complete(server)
    assert refused.status_code == 503
    _assert_retry_after(refused)
    assert httpx.get(f"{server.url}/health", timeout=30).json()["status"] == "restarting"
    assert _wait(lambda: httpx.get(f"{server.url}/health", timeout=30).status_code == 200)
    assert _complete(server, adapter).status_code == 200  # serving again, by itself
    assert _wait(lambda: {adapter, "dates"} <= set(engine.loaded_adapters()), 30)
    health = httpx.get(f"{server.url}/health", headers=AUTH, timeout=30).json()
    assert health["engine_process"]["restarts"] == restarts + 1
    assert "code -9" in health["engine_process"]["last_death"]
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert f"loradock_engine_restarts_total {float(restarts + 1)}" in metrics


def _assert_retry_after(response) -> None:
    """The supervisor's estimate (the backoff plus the last start, whole seconds), told in the
    message and the header alike."""
    wait = response.headers["Retry-After"]
    assert int(wait) >= 1 and f"retry in {wait} s" in response.json()["error"]["message"]


def crash_loop_stops(servers: Servers) -> None:
    server = servers.process
    engine = _engine(server)
    for _ in range(engine.supervisor.policy.crash_loop_deaths):
        if engine.dead:
            break
        assert _wait(lambda: engine.health() is None)  # up again: kill this one
        _kill(server)
        assert _wait(lambda: engine.health() is not None, 10)
    assert _wait(lambda: engine.dead is not None, 10)
    health = httpx.get(f"{server.url}/health", headers=AUTH, timeout=30)
    assert health.status_code == 503 and health.json()["status"] == "engine_stopped"
    assert "crash loop" in health.json()["detail"]
    refused = _complete(server)
    assert refused.status_code == 503 and "restart the server" in refused.text
    assert "Retry-After" not in refused.headers  # waiting will not bring it back
    restarts, pid = engine.supervisor.restarts, engine.pid
    time.sleep(1)  # a restart would have begun by now (backoff 0.05 s)
    assert (engine.supervisor.restarts, engine.pid, engine.restarting) == (restarts, pid, None)


# ---- a forward pass raising (in-process: the same scheduler as in the engine process) -------
def _break(runner, method: str, monkeypatch, when: Callable[[list], bool]) -> None:
    real = getattr(runner, method)

    def broken(*args):
        seqs = args[0] if args else runner.active
        if when(seqs):
            raise RuntimeError(f"injected {method} failure")
        return real(*args)

    monkeypatch.setattr(runner, method, broken)


def _burst(server, jobs: list[tuple[str, str]], max_tokens: int = 8) -> list[int]:
    async def run():
        async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{server.url}/v1/completions",
                        json={"model": m, "prompt": p, "max_tokens": max_tokens, "temperature": 0},
                    )
                    for m, p in jobs
                )
            )

    return [r.status_code for r in asyncio.run(run())]


def prefill_raises(servers: Servers, monkeypatch) -> None:
    server, adapters = servers.inproc, servers.published.adapters
    runner = _engine(server)._scheduler.runner
    _slow_decode(server, monkeypatch, 0.01)
    _break(
        runner, "prefill", monkeypatch, lambda seqs: any("BOOM" in s.request.prompt for s in seqs)
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(_complete, server, adapters[0], max_tokens=30)
        assert _wait(lambda: _engine(server).stats()["running"] >= 1, 10)
        assert _burst(server, [(adapters[1], "BOOM " + PROMPT)]) == [500]
        assert running.result().status_code == 200  # the running batch went on
    assert _wait(lambda: _pins(server) == 0, 10)
    monkeypatch.undo()
    assert _burst(server, [(adapters[1], PROMPT), (adapters[0], PROMPT)]) == [200, 200]


def decode_raises(servers: Servers, monkeypatch) -> None:
    server, adapters = servers.inproc, servers.published.adapters
    runner = _engine(server)._scheduler.runner
    broken = {"left": 1}

    def once(_seqs) -> bool:
        broken["left"] -= 1
        return broken["left"] >= 0

    _break(runner, "decode", monkeypatch, once)
    statuses = _burst(server, [(adapters[1], PROMPT), (adapters[0], PROMPT)])
    assert statuses == [500, 500]  # both rows were in the failed step
    assert _wait(lambda: _pins(server) == 0 and _idle(server), 10)
    monkeypatch.undo()
    assert _burst(server, [(adapters[1], PROMPT), (BASE_ID, PROMPT)]) == [200, 200]


def _slow_decode(server, monkeypatch, seconds: float) -> None:
    runner = _engine(server)._scheduler.runner
    real = runner.decode

    def slow():
        time.sleep(seconds)
        return real()

    monkeypatch.setattr(runner, "decode", slow)


def request_timeout(servers: Servers, monkeypatch) -> None:
    server, adapter = servers.inproc, servers.published.adapters[1]
    _slow_decode(server, monkeypatch, 0.05)  # LONG tokens: 20 s, past the server's 4 s
    slow = _complete(server, adapter, max_tokens=LONG)
    assert slow.status_code == 504 and "request_timeout" in slow.text
    assert _wait(lambda: _idle(server) and _pins(server) == 0, 10)
    body = {"model": adapter, "prompt": PROMPT, "max_tokens": LONG, "stream": True}
    streamed = httpx.post(f"{server.url}/v1/completions", json=body, headers=AUTH, timeout=30)
    assert streamed.status_code == 200 and '"request_timeout"' in streamed.text
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert _wait(lambda: _idle(server) and _pins(server) == 0, 10)
    monkeypatch.undo()
    assert _complete(server, adapter).status_code == 200


# ---- the client leaving --------------------------------------------------------------------
def _client_gone(servers: Servers, monkeypatch, kind: str, stream: bool) -> None:
    server = servers.of(kind)
    if kind == "inproc":
        _slow_decode(server, monkeypatch, 0.01)  # so the generation outlives the client
    engine = _engine(server)
    _complete(server)
    before = engine.stats()["batch_batched_rows"]
    body = {"model": BASE_ID, "prompt": PROMPT, "max_tokens": LONG, "stream": stream}
    url = f"{server.url}/v1/completions"
    if stream:  # the first event, then the connection closed
        with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as response:
            assert next(response.iter_lines()).startswith("data: ")
    else:  # gives up waiting for the whole answer
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=body, headers=AUTH, timeout=0.3)
    assert _wait(lambda: _idle(server), 10)
    rows = engine.stats()["batch_batched_rows"] - before
    assert rows < LONG - 50, rows  # cancelled, not generated to the end


CASES = {
    "prefill-raises": prefill_raises,
    "decode-raises": decode_raises,
    "request-timeout": request_timeout,
    "client-gone-inproc": lambda s, m: _client_gone(s, m, "inproc", stream=False),
    "client-gone-inproc-stream": lambda s, m: _client_gone(s, m, "inproc", stream=True),
    # The engine process cannot be slowed from here, and a quiet machine can finish a whole
    # non-streaming answer within any client timeout: its disconnect is tested streaming.
    "client-gone-process-stream": lambda s, m: _client_gone(s, m, "process", stream=True),
    "engine-killed-mid-batch": lambda s, m: kill_mid_batch(s),
    "crash-loop-stops": lambda s, m: crash_loop_stops(s),  # last: it leaves the engine down
}


SLOW = {"engine-killed-mid-batch"}  # a new engine process imports torch again: tens of seconds


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in CASES]
)
def test_fault(case, servers, monkeypatch):
    CASES[case](servers, monkeypatch)


class _HeldLLM:
    """Enough of vLLM's ``AsyncLLM`` for admission: streams that end when ``release`` is set."""

    def __init__(self):
        self.release = asyncio.Event()

    async def add_lora(self, request) -> None:
        pass

    async def remove_lora(self, lora_id: int) -> None:
        pass

    async def generate(self, *args, **kwargs):
        await self.release.wait()
        return
        yield


@pytest.mark.vllm
def test_vllm_requests_waiting_for_an_adapter_slot_count_against_max_queue(serving_base):
    """One adapter slot, a batch of 1 and a queue of 1: the running request holds the slot, the
    second waits for it (queued), the third is refused (429) instead of waiting unbounded."""
    pytest.importorskip("vllm")
    from loradock.errors import QueueFullError
    from loradock.serving.config import PeftEngineConfig
    from loradock.serving.engines.base import AdapterSpec, GenerationRequest, SamplingParams
    from loradock.serving.engines.vllm.engine import VllmEngine
    from loradock.serving.engines.vllm.options import VllmConfig

    sizes = PeftEngineConfig(max_batch_size=1, max_queue=1, max_loaded=1, max_cpu_adapters=1)
    folder = serving_base.parent / "adapter"
    specs = [AdapterSpec(f"a{i}", f"acme/a{i}", f"{i:040d}", folder, 8) for i in range(3)]

    async def run() -> list[str]:
        engine = VllmEngine(serving_base, sizes=sizes, options=VllmConfig(max_cpu_loras=1))
        engine._llm = llm = _HeldLLM()
        engine.residency.bind(llm)

        async def one(spec: AdapterSpec) -> str:
            request = GenerationRequest(
                request_id=spec.name, prompt="hi", sampling=SamplingParams(), adapter=spec
            )
            try:
                async for _ in engine.generate(request):
                    pass
                return "served"
            except QueueFullError:
                return "429"

        tasks = [asyncio.ensure_future(one(spec)) for spec in specs[:2]]
        await asyncio.sleep(0.2)  # the first runs, the second waits for the slot
        queued = engine.stats()["queue_depth"]
        third = await asyncio.wait_for(one(specs[2]), 10)  # not admitted to wait unbounded
        llm.release.set()
        return [queued, *await asyncio.gather(*tasks), third]

    assert asyncio.run(run()) == [1, "served", "served", "429"]
