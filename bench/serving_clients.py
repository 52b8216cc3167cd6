"""The OpenAI clients that load ``bench/serving.py``'s servers: :func:`drive` (in this process)
and :func:`drive_apart` (spread over client processes that start together)."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import multiprocessing
import time
from typing import Any


async def drive(
    url: str,
    jobs: list[tuple[str, str]],
    *,
    concurrency: int,
    max_tokens: int,
    stream: bool = False,
    start_at: float | None = None,
) -> dict[str, Any]:
    """Run ``jobs`` (model, prompt) through ``concurrency`` clients; tokens/s and TTFTs.

    ``start_at`` (``time.monotonic()``, one clock for every process): the clients start then,
    so several client processes start together; ``started``/``ended`` are on the same clock."""
    from openai import AsyncOpenAI

    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    tokens, ttfts = 0, []

    async def worker(client: AsyncOpenAI) -> None:
        nonlocal tokens
        while not queue.empty():
            model, prompt = queue.get_nowait()
            t0 = time.perf_counter()
            if stream:
                events = await client.completions.create(
                    model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True
                )
                first = True
                async for event in events:
                    if first:
                        ttfts.append(time.perf_counter() - t0)
                        first = False
                    if event.usage:
                        tokens += event.usage.completion_tokens
            else:
                out = await client.completions.create(
                    model=model, prompt=prompt, max_tokens=max_tokens, temperature=0
                )
                tokens += out.usage.completion_tokens

    async with AsyncOpenAI(
        base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600
    ) as client:
        if start_at is not None:
            await asyncio.sleep(max(start_at - time.monotonic(), 0.0))
        started = start_at if start_at is not None else time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        ended = time.monotonic()
    wall = ended - started
    return {
        "tokens": tokens,
        "wall": wall,
        "tps": tokens / wall,
        "ttfts": ttfts,
        "started": started,
        "ended": ended,
    }


_CLIENTS: concurrent.futures.ProcessPoolExecutor | None = None
# Clients per client process. Real clients are separate programs: one Python process running
# all 32 spent ~1.5 ms of CPU a request in the openai client (building and parsing), so a
# batch of 32 answers took ~30 ms to come back as 32 new requests, and the server idled.
CLIENTS_PER_PROCESS = 8
MAX_CLIENT_PROCESSES = 4
START_DELAY_S = 0.25  # the client processes get ready, then start together


def client_pids() -> set[int]:
    """The client processes' pids (a measurement of the server leaves them out)."""
    return set(_CLIENTS._processes) if _CLIENTS is not None else set()


def _client_ready(_: int) -> None:
    import openai  # noqa: F401  (the slow part of a client process's start)

    time.sleep(0.2)  # hold this process, so that each call lands on a process of its own


def _drive_sync(
    url: str, jobs: list, concurrency: int, max_tokens: int, stream: bool, start_at: float
) -> dict:
    return asyncio.run(
        drive(
            url,
            jobs,
            concurrency=concurrency,
            max_tokens=max_tokens,
            stream=stream,
            start_at=start_at,
        )
    )


def drive_apart(
    url: str,
    jobs: list[tuple[str, str]],
    *,
    concurrency: int,
    max_tokens: int,
    stream: bool = False,
    start_delay: float = START_DELAY_S,
) -> dict[str, Any]:
    """:func:`drive` from separate client processes, as real clients are: the clients' own
    Python work (openai, httpx, pydantic) then does not compete for the server's GIL, and
    ``concurrency`` clients are spread over one process per ``CLIENTS_PER_PROCESS`` (at most
    ``MAX_CLIENT_PROCESSES``), each with its share of ``jobs``, all starting together. The
    server still pays for all of its own HTTP work; the CPU is shared as before.

    Tokens/s is every process's tokens over the time from the common start to the last end."""
    global _CLIENTS
    if _CLIENTS is None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        _CLIENTS = concurrent.futures.ProcessPoolExecutor(MAX_CLIENT_PROCESSES, mp_context=context)
        atexit.register(_CLIENTS.shutdown)
        # Start every client process now: one started later (its import of openai takes ~1 s)
        # would begin after the common start and count its start-up against the server.
        list(_CLIENTS.map(_client_ready, range(MAX_CLIENT_PROCESSES)))
    parts = max(1, min(concurrency // CLIENTS_PER_PROCESS, MAX_CLIENT_PROCESSES, len(jobs)))
    start_at = time.monotonic() + start_delay
    futures = [
        _CLIENTS.submit(
            _drive_sync,
            url,
            jobs[i::parts],
            concurrency // parts + (i < concurrency % parts),
            max_tokens,
            stream,
            start_at,
        )
        for i in range(parts)
    ]
    results = [f.result() for f in futures]
    tokens = sum(r["tokens"] for r in results)
    wall = max(r["ended"] for r in results) - start_at
    return {
        "tokens": tokens,
        "wall": wall,
        "tps": tokens / wall,
        "ttfts": [t for r in results for t in r["ttfts"]],
        "processes": parts,
    }
