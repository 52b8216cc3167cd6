"""How a sequence's output reaches the request waiting for it: one ``Sink`` per destination.

The model thread hands each step's chunks to their sinks once per step, grouped by sink
(``Outbox``), never once per token. A sink is shared by every sequence with the same
destination, and ``reply_to`` (carried by each sequence) tells it which request a chunk is for:

- ``LoopSink`` (in-process ``PeftEngine.generate``): one ``call_soon_threadsafe`` per step puts
  every chunk into its request's ``asyncio.Queue`` (``reply_to``);
- ``child.PipeSink`` (the engine process): one pipe message per step, ``reply_to`` being the
  request id the HTTP process gave.

An error that ends one request (its adapter failed to read or attach, a failed step, a full
queue in the engine process) goes through the same sink with ``fail``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from loradock.serving.engines.base import GenerationChunk

Outbox = dict["Sink", list[tuple[Any, GenerationChunk]]]  # a step's chunks, grouped by sink


class Sink(Protocol):
    def deliver(self, items: list[tuple[Any, GenerationChunk]]) -> None:
        """A step's chunks, ``(reply_to, chunk)``, in one hand-over (model thread)."""

    def fail(self, reply_to: Any, error: BaseException) -> None:
        """``error`` ends the request ``reply_to`` (any thread)."""


def deliver_all(outbox: Outbox) -> None:
    for sink, items in outbox.items():
        sink.deliver(items)


class LoopSink:
    """Chunks into ``asyncio.Queue``s read by coroutines of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    def deliver(self, items: list[tuple[asyncio.Queue, GenerationChunk]]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: its clients are gone
            self.loop.call_soon_threadsafe(_put_all, items)

    def fail(self, reply_to: asyncio.Queue, error: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(reply_to.put_nowait, error)


def _put_all(items: list[tuple[asyncio.Queue, GenerationChunk]]) -> None:
    for queue, chunk in items:
        queue.put_nowait(chunk)
