"""A request's choices: ``n`` samples of each prompt, each its own engine request, merged.

Choice ``i`` of prompt ``p`` has index ``p * n + i`` (OpenAI's order: choices in prompt
order). The engine requests are submitted together, so the engine's scheduler gathers them
into one prefill, where the PEFT engine computes their common prompt once (equal prompt ids
and adapter are all it needs to know: ``engines/peft/prefill.py``). With a ``seed``, choice
``i`` samples with ``seed + i``: the choices differ and the request stays reproducible.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from loradock.serving.engines.base import (
    MAX_SEED,
    GenerationChunk,
    GenerationRequest,
    TokenLogprob,
)


@dataclass
class Choice:
    """One choice in flight: its engine request and stream, and what ``usage`` needs."""

    index: int
    request: GenerationRequest
    stream: AsyncIterator[GenerationChunk] | None = None
    first_of_prompt: bool = True  # its prompt's tokens count once in ``usage``
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    first: GenerationChunk | None = None
    # the answer so far (a non-streaming request sends it whole)
    texts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    sent_chars: int = 0  # characters streamed so far (completions' ``text_offset``)

    def record(self, chunk: GenerationChunk) -> GenerationChunk:
        if self.first is None:
            self.first = chunk
        self.prompt_tokens = chunk.prompt_tokens or self.prompt_tokens
        self.completion_tokens = chunk.completion_tokens
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.texts.append(chunk.text)
        self.token_ids += chunk.token_ids
        self.logprobs += chunk.logprobs or ()
        return chunk

    def text(self) -> str:
        return "".join(self.texts)


def samples(request: GenerationRequest, n: int, first_index: int) -> list[Choice]:
    """``n`` choices of one prompt's request."""
    out = []
    for i in range(n):
        sampling = request.sampling
        if i and sampling.seed is not None:
            sampling = replace(sampling, seed=(sampling.seed + i) % (MAX_SEED + 1))
        req = replace(request, request_id=f"{request.request_id}-{i}", sampling=sampling)
        out.append(Choice(first_index + i, req, first_of_prompt=i == 0))
    return out


async def open_all(
    choices: list[Choice], open_stream: Callable[[GenerationRequest], AsyncIterator]
) -> list[GenerationChunk]:
    """Every choice's first chunk, awaited together (so up-front errors come before any
    response starts); on any error every stream is closed and the first error raised."""
    for choice in choices:
        choice.stream = open_stream(choice.request)
    firsts = await asyncio.gather(*(anext(c.stream) for c in choices), return_exceptions=True)
    errors = [f for f in firsts if isinstance(f, BaseException)]
    if errors:
        await close_all(choices)
        raise errors[0]
    return [c.record(f) for c, f in zip(choices, firsts, strict=True)]


async def close_all(choices: list[Choice]) -> None:
    for choice in choices:
        if choice.stream is not None:
            with contextlib.suppress(Exception):
                await choice.stream.aclose()


async def rest(choices: list[Choice]) -> AsyncIterator[tuple[Choice, GenerationChunk]]:
    """The chunks after the first of every unfinished choice, as they come."""
    live = [c for c in choices if c.finish_reason is None]
    if len(live) == 1:  # no tasks for the common case
        async for chunk in live[0].stream:
            yield live[0], live[0].record(chunk)
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        try:
            async for chunk in choice.stream:
                await queue.put((choice, chunk))
        except Exception as exc:
            await queue.put((choice, exc))
        finally:
            await queue.put((choice, None))

    tasks = [asyncio.ensure_future(pump(c)) for c in live]
    try:
        open_ = len(live)
        while open_:
            choice, item = await queue.get()
            if item is None:
                open_ -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield choice, choice.record(item)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
