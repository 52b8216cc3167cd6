"""(s) Structured outputs: throughput with half the rows of every batch constrained by a JSON
schema, against the same workload unconstrained (goal >= 0.85).

One PEFT server (engine in its own process, as ``loradock serve`` runs it) over 8 adapters;
``setup.clients`` concurrent completions, greedy. The schema is a typical extraction record
whose last field is a free string, so constrained answers run to ``max_tokens`` like free
ones: both runs generate the same number of tokens, and the ratio is the cost of the masks
(one xgrammar bitmask per constrained row per step) and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.serving_setup import BenchSetup, Row, Server, _preload, _prompts, best_of

GOAL = 0.85
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


async def _drive(url: str, jobs: list[tuple[str, str, bool]], *, concurrency: int, max_tokens: int):
    """Completion tokens/s of ``jobs`` (model, prompt, constrained) over ``concurrency``
    clients."""
    from openai import AsyncOpenAI

    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    tokens = 0

    async def worker(client: AsyncOpenAI) -> None:
        nonlocal tokens
        while not queue.empty():
            model, prompt, constrained = queue.get_nowait()
            extra = {"response_format": FORMAT} if constrained else {}
            out = await client.completions.create(
                model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, extra_body=extra
            )
            tokens += out.usage.completion_tokens

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"tokens": tokens, "wall": wall, "tps": tokens / wall}


def bench_structured(setup: BenchSetup) -> list[Row]:
    n, t = setup.clients, setup.max_tokens
    eight = setup.adapters[:8]
    prompts = _prompts(n)
    pairs = [(eight[i % 8], prompts[i % n]) for i in range(n * 2)]
    free = [(m, p, False) for m, p in pairs]
    mixed = [(m, p, i % 2 == 0) for i, (m, p) in enumerate(pairs)]

    def run(jobs: list, max_tokens: int = t) -> dict[str, Any]:
        return asyncio.run(_drive(srv.url, jobs, concurrency=n, max_tokens=max_tokens))

    with Server(setup, max_loaded=8, max_batch_size=n, engine_process=True) as srv:
        _preload(srv.url, eight)
        run(mixed[:n], max_tokens=4)  # warm-up, the schema compiled once
        plain = best_of(lambda: run(free))
        constrained = best_of(lambda: run(mixed))
        stats = srv.engine.stats()
    s = constrained["tps"] / plain["tps"]
    return [
        Row("s_structured_vs_free", "(s) half of each batch JSON-schema constrained / none", s,
            goal=f">= {GOAL}", ok=s >= GOAL,
            detail=f"{constrained['tps']:.0f} vs {plain['tps']:.0f} tok/s, grammars compiled "
                   f"{stats.get('grammar_compiled', 0):.0f}"),
    ]  # fmt: skip
