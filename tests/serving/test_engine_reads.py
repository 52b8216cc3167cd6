"""The in-process PEFT engine's edges: an adapter read from disk overlaps the request's wait in
the queue (other requests run on meanwhile, the request is answered as if its adapter had been
in memory, and a read that fails fails that request only), and each step's chunks reach their
requests in one hand-over."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from loradock.serving.config import PeftEngineConfig
from loradock.serving.engines.base import AdapterSpec, GenerationRequest, SamplingParams
from loradock.serving.engines.peft import adapter_cache as ac
from loradock.serving.engines.peft.engine import PeftEngine
from tests.helpers.serving import BASE_ID

PROMPT = "Convert the date 3 March 2024 to ISO format:"


def _spec(published, name: str) -> AdapterSpec:
    r = published.registry.resolve(name)
    return AdapterSpec(name=name, repo_id=r.repo_id, sha=r.sha, path=Path(r.path), rank=4)


async def _answer(engine, spec, tag: str, max_tokens: int = 6) -> tuple[str, float]:
    request = GenerationRequest(
        tag, PROMPT, SamplingParams(max_tokens=max_tokens, temperature=0), spec, stream=False
    )
    text = ""
    async for chunk in engine.generate(request):
        text += chunk.text
    return text, time.perf_counter()


@pytest.fixture
def engine(published):
    options = PeftEngineConfig(dtype="float32", max_loaded=2)
    engine = PeftEngine(published.base.path, options, base_name=BASE_ID)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.shutdown())


def test_slow_read_overlaps_and_holds_up_nobody(engine, published, monkeypatch):
    slow, other = _spec(published, published.adapters[1]), _spec(published, published.adapters[2])
    real = ac.read_adapter_files
    gate = threading.Event()

    def held_read(spec, dtype):
        if spec.repo_id == slow.repo_id:
            assert gate.wait(10), "the test never released the read"
        return real(spec, dtype)

    monkeypatch.setattr(ac, "read_adapter_files", held_read)

    async def main():
        expected_slow, _ = await _answer(engine, other, "warm-other")  # reads `other` once
        queued = asyncio.ensure_future(_answer(engine, slow, "slow"))
        await asyncio.sleep(0.05)
        assert engine.stats()["queue_depth"] == 1  # waiting in the queue while it reads
        # The base and a loaded adapter are answered while the read is held.
        base_text, base_done = await _answer(engine, None, "base")
        other_text, other_done = await _answer(engine, other, "other")
        assert not queued.done()
        released = time.perf_counter()
        gate.set()
        slow_text, slow_done = await queued
        return base_done, other_done, released, slow_done, other_text, expected_slow, slow_text

    base_done, other_done, released, slow_done, other_text, expected, slow_text = asyncio.run(
        main()
    )
    assert base_done < released and other_done < released < slow_done
    assert other_text == expected
    # The slow adapter's answer is the one it gives when it is already in memory.
    again, _ = asyncio.run(_answer(engine, slow, "again"))
    assert slow_text == again and slow_text != other_text


@pytest.mark.parametrize(
    "failure",
    [FileNotFoundError("adapter_model.safetensors is gone"), ValueError("bad header")],
    ids=["missing-file", "corrupt"],
)
def test_failed_read_fails_only_that_request(engine, published, monkeypatch, failure):
    broken = _spec(published, published.adapters[3])

    def failing_read(spec, dtype):
        raise failure

    monkeypatch.setattr(ac, "read_adapter_files", failing_read)

    async def main():
        with pytest.raises(type(failure), match=str(failure).split()[0]):
            await _answer(engine, broken, "broken")
        text, _ = await _answer(engine, None, "base")  # the engine goes on
        return text

    assert asyncio.run(main())
    assert engine.stats()["queue_depth"] == 0  # the failed request left the queue


class RecordingSink:
    """A ``delivery.Sink`` that records each hand-over (called from the model thread)."""

    def __init__(self):
        self.deliveries: list[list[int]] = []  # the request ids of each hand-over
        self.text: dict[int, str] = {}
        self.done: set[int] = set()
        self.finished = threading.Event()
        self.expected = 0

    def deliver(self, items):
        self.deliveries.append([rid for rid, _ in items])
        for rid, chunk in items:
            self.text[rid] = self.text.get(rid, "") + chunk.text
            if chunk.finish_reason is not None:
                self.done.add(rid)
        if len(self.done) == self.expected:
            self.finished.set()

    def fail(self, reply_to, error):
        raise AssertionError(f"request {reply_to} failed: {error!r}")


@pytest.mark.parametrize(
    ("n", "stream", "hand_overs"),
    [(1, True, 6), (4, True, 6), (4, False, 2)],
    ids=["one", "four-streamed", "four-whole"],  # a whole answer: its first token, then the rest
)
def test_one_hand_over_per_step_for_every_request(engine, n, stream, hand_overs):
    sink = RecordingSink()
    sink.expected = n
    sampling = SamplingParams(max_tokens=6, temperature=0)
    expected, _ = asyncio.run(_answer(engine, None, "alone"))
    steps_before = engine.stats()["batch_steps"]

    async def submit_all():  # submitted together: one prefill, then decode steps for all
        for i in range(n):
            engine.submit(
                GenerationRequest(f"r{i}", PROMPT, sampling, None, stream=stream), sink, i
            )

    asyncio.run(submit_all())
    assert sink.finished.wait(30)
    steps = engine.stats()["batch_steps"] - steps_before
    assert len(sink.deliveries) <= steps
    assert sink.deliveries == [list(range(n))] * hand_overs  # every request in each hand-over
    assert sink.text == dict.fromkeys(range(n), expected)
