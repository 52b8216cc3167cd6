"""The PEFT engine in its own process: faithful to the in-process engine, errors cross the
pipe intact, a cancelled stream frees its row, a failed start is reported. A dead engine (503s,
then a restart): tests/serving/test_faults.py.

The whole API suite (test_api.py, test_api_errors.py, test_load.py) also runs on this engine
(engine kind "peft-process"); these are the cases only a second process has.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest

from loradock.errors import (
    ConfigError,
    EngineError,
    IncompatibleAdapterError,
    QueueFullError,
    RequestError,
)
from loradock.serving.config import PeftEngineConfig
from loradock.serving.engines.peft.child import portable
from loradock.serving.engines.peft.process import ProcessEngine
from tests.helpers.serving import API_KEY, BASE_ID, start_server

PROMPT = "Convert the date 3 March 2024 to ISO format:"


class _Unpicklable(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()  # a lock cannot be pickled


@pytest.mark.parametrize(
    ("error", "kind", "status", "fragment"),
    [
        (IncompatibleAdapterError("Adapter 'a/b' cannot be served", ["uses DoRA"]),
         IncompatibleAdapterError, 422, "uses DoRA"),
        (ConfigError("Invalid server options", ["x", "y"]), ConfigError, 400, "2 problem(s)"),
        (QueueFullError("queue full: retry"), QueueFullError, 429, "retry"),
        (RequestError("prompt too long"), RequestError, 400, "too long"),
        (EngineError("stopped"), EngineError, 503, "stopped"),
        (_Unpicklable("holds a lock"), RuntimeError, None, "_Unpicklable: holds a lock"),
    ],
    ids=["problems", "config", "queue-full", "request", "engine", "unpicklable"],
)  # fmt: skip
def test_errors_survive_the_pipe(error, kind, status, fragment):
    import pickle

    sent = portable(error)
    received = pickle.loads(pickle.dumps(sent))
    assert type(received) is kind
    assert fragment in str(received)
    assert getattr(received, "http_status", None) == status
    if isinstance(error, IncompatibleAdapterError):
        assert received.problems == ["uses DoRA"]


@pytest.fixture(scope="module")
def servers(published):
    """The same options served by the in-process engine and by the process engine."""
    options = dict(max_loaded=2, max_model_len=128, max_batch_size=8)
    inproc, _ = start_server("peft", published, **options)
    proc, app = start_server("peft-process", published, **options)
    try:
        yield inproc, proc, app
    finally:
        proc.stop()
        inproc.stop()


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def test_same_greedy_text_as_in_process(servers, published):
    inproc, proc, _ = servers
    for model in (BASE_ID, *published.adapters[:3]):
        texts = [
            _client(s)
            .completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
            .choices[0]
            .text
            for s in (inproc, proc)
        ]
        assert texts[0] == texts[1], model


def test_engine_stats_reach_metrics(servers, published):
    _, proc, app = servers
    _client(proc).completions.create(model=published.adapters[1], prompt=PROMPT, max_tokens=4)
    stats = app.state.loradock.engine.stats()
    assert stats["batch_steps"] > 0 and stats["adapter_disk_loads"] >= 1
    assert published.adapters[1] in app.state.loradock.engine.loaded_adapters()
    text = httpx.get(f"{proc.url}/metrics").text
    assert "loradock_adapter_loads_total" in text


def _fresh_stats(server, engine) -> dict[str, float]:
    """Stats ride on the engine's messages: a one-token request brings a fresh snapshot."""
    _client(server).completions.create(model=BASE_ID, prompt="hi", max_tokens=1)
    return engine.stats()


def test_cancelled_stream_frees_its_row(servers):
    _, proc, app = servers
    engine = app.state.loradock.engine
    before = _fresh_stats(proc, engine)["batch_batched_rows"]

    async def read_two_then_close():
        async with openai.AsyncOpenAI(
            base_url=f"{proc.url}/v1", api_key=API_KEY, max_retries=0
        ) as client:
            stream = await client.completions.create(
                model=BASE_ID, prompt="hi", max_tokens=120, stream=True, temperature=0
            )
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 2:
                    break
            await stream.close()

    asyncio.run(read_two_then_close())
    time.sleep(0.5)  # long enough to generate all 120 tokens, had the cancel not arrived
    deadline = time.monotonic() + 10
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the idle engine's stats come within STATS_INTERVAL_S
    stats = engine.stats()
    assert stats["running"] == 0
    # rows the stream occupied, summed over steps: far fewer than its 120 tokens
    assert stats["batch_batched_rows"] - before < 100, stats


def test_start_failure_is_reported(published):
    options = PeftEngineConfig(max_model_len=10**6, dtype="float32", torch_threads=1)
    engine = ProcessEngine(published.base.path, options, base_name=BASE_ID)
    with pytest.raises(RequestError, match="exceeds the base model's context"):
        asyncio.run(engine.start())
    assert not engine._process.is_alive()
