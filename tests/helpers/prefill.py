"""Engines and requests for the shared-prefill tests (``tests/serving/test_shared_prefill.py``,
``test_prefix_prefill.py``): requests sent together land in one prefill, and each answer is
compared with the same request's lone run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from loradock.serving.config import PeftEngineConfig
from loradock.serving.engines.base import GenerationRequest, SamplingParams
from tests.helpers.event_loop import run_on
from tests.helpers.serving import BASE_ID

PROMPTS = {"A": "Convert the date 3 March 2024 to ISO format:", "B": "Count to five:"}
GREEDY = {"temperature": 0, "max_tokens": 6}
SEEDED = {"temperature": 1.0, "max_tokens": 6, "seed": 7}
ECHO = {**GREEDY, "logprobs": 2}


def run(loop, coro, timeout: float = 120):
    return run_on(loop, coro, timeout)


@contextlib.contextmanager
def started_engines(published, loop, kinds: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """PEFT engines of ``kinds`` ("in-process", "process") on the tiny base, started."""
    from loradock.serving.engines.peft.engine import PeftEngine
    from loradock.serving.engines.peft.process import ProcessEngine

    # A long gathering wait: requests sent together always land in one prefill, however
    # loaded the machine.
    options = PeftEngineConfig(
        dtype="float32", max_loaded=2, max_batch_size=16, torch_threads=1, max_wait_ms=100
    )
    classes = {"in-process": PeftEngine, "process": ProcessEngine}
    built = {k: classes[k](published.base.path, options, base_name=BASE_ID) for k in kinds}
    for engine in built.values():
        run(loop, engine.start(), timeout=300)
    try:
        yield built
    finally:
        for engine in built.values():
            run(loop, engine.shutdown())


def adapter_spec(published):
    from loradock.serving.engines.base import AdapterSpec

    resolved = published.registry.resolve(published.adapters[1])
    return AdapterSpec("good", resolved.repo_id, resolved.sha, resolved.path, rank=4)


@contextlib.contextmanager
def recorded_prefills(model) -> Iterator[list[tuple[int, int]]]:
    """(rows, prompt tokens computed) of every prefill forward ``model`` runs."""
    seen: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1:  # a decode step feeds one token a row
            # the tokens this forward computes (after a shared prefix, the mask covers its
            # cached columns too)
            computed = kwargs["attention_mask"][:, -ids.shape[1] :]
            seen.append((ids.shape[0], int(computed.sum())))

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        hook.remove()


def requests_for(spec: list[tuple[str, bool, dict]], adapter) -> list[GenerationRequest]:
    """(prompt name, through the adapter?, sampling) -> requests."""
    return [
        GenerationRequest(f"r{i}", PROMPTS[p], SamplingParams(**s), adapter if lora else None)
        for i, (p, lora, s) in enumerate(spec)
    ]


def choices(prompt: str, lora: bool, n: int, **sampling) -> list[tuple[str, bool, dict]]:
    """A request's ``n`` choices as the HTTP layer makes them: choice ``i`` seeds ``seed + i``."""
    seed = sampling.pop("seed", None)
    return [
        (prompt, lora, {**sampling, "seed": None if seed is None else seed + i}) for i in range(n)
    ]


async def answer(engine, request: GenerationRequest) -> dict:
    out = {"ids": [], "logprobs": [], "prompt": None}
    async for chunk in engine.generate(request):
        out["ids"] += chunk.token_ids
        out["logprobs"] += [(e.token_id, e.logprob, e.top) for e in chunk.logprobs or ()]
        if chunk.prompt_logprobs is not None:
            out["prompt"] = [e and (e.token_id, e.logprob, e.top) for e in chunk.prompt_logprobs]
    return out


async def together(engine, requests: list[GenerationRequest]) -> list[dict]:
    return await asyncio.gather(*(answer(engine, r) for r in requests))


def same(together: dict, alone: dict) -> bool:
    """The same tokens, and logprobs equal to float rounding (the batches differ)."""

    def flat(entries):
        return [
            x for e in entries or () if e for x in (e[0], e[1], *(v for pair in e[2] for v in pair))
        ]

    return together["ids"] == alone["ids"] and all(
        flat(together[k]) == pytest.approx(flat(alone[k]), abs=1e-4) and
        (together[k] is None) == (alone[k] is None)
        for k in ("logprobs", "prompt")
    )  # fmt: skip
