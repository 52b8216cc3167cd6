"""The cost of two request options in a mixed batch, each against the same workload without
it: (s) structured outputs (goal >= 0.85) and (p) logprobs (goal >= 0.9).

One PEFT server (engine in its own process, as ``loradock serve`` runs it) over 8 adapters;
``setup.clients`` concurrent clients, greedy, so both runs of a row generate the same tokens
and its ratio is the option's cost and nothing else.

(s) half the rows of every batch constrained by a JSON schema: a typical extraction record
whose last field is a free string, so constrained answers run to ``max_tokens`` like free ones
(the cost is one xgrammar bitmask per constrained row per step).
(p) every row asking for its tokens' logprobs with their 5 best alternatives, half of them
chat completions (``logprobs: true, top_logprobs: 5``) and half completions (``logprobs: 5``):
a log-softmax and a top-k over the vocabulary per row and step, and the JSON that carries them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.serving_setup import REPEATS, BenchSetup, Row, Server, _preload, _prompts

GOAL = 0.85
LOGPROBS_GOAL = 0.9
TOP_LOGPROBS = 5
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "city": {"type": "string", "maxLength": 40},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "role": {"enum": ["admin", "user", "guest"]},
        "notes": {"type": "string"},
    },
    "required": ["name", "city", "year", "role", "notes"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}}
CONSTRAINED = {"response_format": FORMAT}
CHAT_LOGPROBS = {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
COMPLETION_LOGPROBS = {"logprobs": TOP_LOGPROBS}

# One request of a workload: (model, prompt, chat or not, extra body fields).
Job = tuple[str, str, bool, dict[str, Any]]


async def _drive(url: str, jobs: list[Job], *, concurrency: int, max_tokens: int):
    """Completion tokens/s of ``jobs`` over ``concurrency`` clients."""
    from openai import AsyncOpenAI

    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    tokens = 0

    async def worker(client: AsyncOpenAI) -> None:
        nonlocal tokens
        while not queue.empty():
            model, prompt, chat, extra = queue.get_nowait()
            common = dict(model=model, max_tokens=max_tokens, temperature=0, extra_body=extra)
            if chat:
                messages = [{"role": "user", "content": prompt}]
                out = await client.chat.completions.create(messages=messages, **common)
            else:
                out = await client.completions.create(prompt=prompt, **common)
            tokens += out.usage.completion_tokens

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"tokens": tokens, "wall": wall, "tps": tokens / wall}


def _side_by_side(setup: BenchSetup, plain: list[Job], option: list[Job]) -> tuple[dict, ...]:
    """``plain`` and ``option`` driven on one server, each the best of ``REPEATS`` drives,
    and its engine's stats. The two alternate, so a change in the load of a shared machine
    falls on both."""
    n, t = setup.clients, setup.max_tokens
    eight = setup.adapters[:8]

    def run(jobs: list[Job], max_tokens: int = t) -> dict[str, Any]:
        return asyncio.run(_drive(srv.url, jobs, concurrency=n, max_tokens=max_tokens))

    with Server(setup, max_loaded=8, max_batch_size=n, engine_process=True) as srv:
        _preload(srv.url, eight)
        run(option[:n], max_tokens=4)  # warm-up (a schema compiled once)
        drives = [(run(plain), run(option)) for _ in range(REPEATS)]
        stats = srv.engine.stats()
    without, with_option = (max(side, key=lambda r: r["tps"]) for side in zip(*drives, strict=True))
    return without, with_option, stats


def _pairs(setup: BenchSetup) -> list[tuple[str, str]]:
    """Twice ``setup.clients`` requests over 8 adapters."""
    n, eight = setup.clients, setup.adapters[:8]
    prompts = _prompts(n)
    return [(eight[i % 8], prompts[i % n]) for i in range(n * 2)]


def bench_structured(setup: BenchSetup) -> list[Row]:
    pairs = _pairs(setup)
    free = [(m, p, False, {}) for m, p in pairs]
    mixed = [(m, p, False, CONSTRAINED if i % 2 == 0 else {}) for i, (m, p) in enumerate(pairs)]
    plain, constrained, stats = _side_by_side(setup, free, mixed)
    s = constrained["tps"] / plain["tps"]
    return [
        Row("s_structured_vs_free", "(s) half of each batch JSON-schema constrained / none", s,
            goal=f">= {GOAL}", ok=s >= GOAL,
            detail=f"{constrained['tps']:.0f} vs {plain['tps']:.0f} tok/s, grammars compiled "
                   f"{stats.get('grammar_compiled', 0):.0f}"),
    ]  # fmt: skip


def bench_logprobs(setup: BenchSetup) -> list[Row]:
    chats = [(m, p, i % 2 == 0) for i, (m, p) in enumerate(_pairs(setup))]
    free = [(m, p, chat, {}) for m, p, chat in chats]
    asking = [(m, p, c, CHAT_LOGPROBS if c else COMPLETION_LOGPROBS) for m, p, c in chats]
    plain, logprobs, _ = _side_by_side(setup, free, asking)
    p = logprobs["tps"] / plain["tps"]
    return [
        Row("p_logprobs_vs_none", f"(p) every row with logprobs and top {TOP_LOGPROBS} / none", p,
            goal=f">= {LOGPROBS_GOAL}", ok=p >= LOGPROBS_GOAL,
            detail=f"{logprobs['tps']:.0f} vs {plain['tps']:.0f} tok/s, half chat, half "
                   "completions"),
    ]  # fmt: skip
