"""How long a request's generation lives: until its deadline, or until its client leaves.

``Lifetime.guard`` wraps the engine's chunk stream of one request. Closing that stream is how
a generation is cancelled in the engine (its row leaves the batch, its adapter pin is
released), and the guard closes it when

- the request runs past ``--request-timeout``: ``RequestTimeoutError`` (504, or a final error
  event on a stream that has started);
- the client disconnects while nothing is sent to it yet (a non-streaming request, or a
  streaming one before its first chunk): ``ClientDisconnectedError`` (499 in the metrics; the
  client is gone, nobody reads it). Once a stream has started, Starlette notices a client
  leaving itself and cancels the response, whose ``finally`` closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from loradock.errors import ClientDisconnectedError, RequestTimeoutError
from loradock.serving.engines.base import GenerationChunk


class Lifetime:
    def __init__(self, receive: Any, timeout_s: float):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self._receive = receive
        self._gone: asyncio.Task | None = None

    @classmethod
    def of(cls, request: Request, timeout_s: float) -> Lifetime:
        return cls(request.receive, timeout_s)

    async def guard(
        self, stream: AsyncIterator[GenerationChunk], *, streaming: bool
    ) -> AsyncIterator[GenerationChunk]:
        """``stream``'s chunks, each within the deadline; the client watched until the first
        chunk of a streaming request, throughout a non-streaming one."""
        watch = True
        try:
            while True:
                try:
                    chunk = await self._next(stream, watch)
                except StopAsyncIteration:
                    return
                if streaming and watch:
                    watch = False
                    self._stop_watching()  # Starlette listens from here on
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self._stop_watching()
            await stream.aclose()

    async def _next(self, stream: AsyncIterator[GenerationChunk], watch: bool) -> GenerationChunk:
        left = self.deadline - time.monotonic()
        if not watch:
            try:
                async with asyncio.timeout(left):
                    return await anext(stream)
            except TimeoutError:
                raise self._expired() from None
        if self._gone is None:
            self._gone = asyncio.ensure_future(self._client_gone())
        step = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait(
            {step, self._gone}, timeout=max(left, 0), return_when=asyncio.FIRST_COMPLETED
        )
        if step in done:
            return step.result()
        step.cancel()  # cancels the generation in the engine (the stream's ``finally``)
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await step
        if self._gone in done:
            raise ClientDisconnectedError("The client disconnected: its generation is cancelled.")
        raise self._expired()

    def _expired(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"The request ran past the server's request timeout of {self.timeout_s:g} s "
            "(--request-timeout) and was cancelled: ask for fewer tokens or retry later."
        )

    async def _client_gone(self) -> None:
        """Returns when the client disconnects (the body is read: the next message is that)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def _stop_watching(self) -> None:
        if self._gone is not None:
            self._gone.cancel()
