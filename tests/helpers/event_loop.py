"""One long-lived event loop on a thread, for engines whose tasks outlive one test (the process
engine's reader): tests submit coroutines to it from their own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def background_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """``coro``'s result, run on ``loop`` (at most ``timeout`` seconds)."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
