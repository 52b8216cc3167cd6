"""The PEFT engine in its own process, so HTTP work and the model never share one GIL.

In one process, every request's HTTP work (uvicorn, FastAPI, pydantic, tokenizing) runs on the
event loop while the model thread runs the batch, and both need the GIL: each decode step
waits behind request parsing, and the bench measured the server at 0.6x of the same engine
driven directly. vLLM splits the same way (API server process + engine core process).

``ProcessEngine`` implements ``engines.base.Engine`` in the HTTP process: it tokenizes (its
``PromptFrontend`` also serves ``count_tokens`` and chat templates) and talks over one pipe to
a spawned child (``child.py``) that runs a ``PeftEngine`` on the ids it is sent. Messages:

- parent -> child: ``("gen", rid, GenerationRequest)``, ``("cancel", rid)``,
  ``("call", cid, method, args)`` (load, unload), ``("stop",)``.
- child -> parent: ``("ready", info)`` or ``("failed", error)`` once, then
  ``("out", [(rid, chunk or error), ...], stats, loaded)``: one per model step, with that
  step's chunks for every request, sent by the child's model thread itself;
  ``("ret", cid, ok, value, stats, loaded)``; and ``("stats", stats, loaded)`` while idle.

A token thus crosses two boundaries: the pipe (child model thread -> this process's reader
thread) and one ``call_soon_threadsafe`` per message to the event loop. ``stats()`` and
``loaded_adapters()`` answer from the snapshot every message carries. If the child dies, every
waiting request fails with ``EngineError`` (503) and ``/health`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.errors import EngineError
from loradock.serving.engines.base import (
    AdapterSpec,
    GenerationChunk,
    GenerationRequest,
)
from loradock.serving.engines.frontend import PromptFrontend
from loradock.serving.engines.peft.child import child_main
from loradock.serving.engines.peft.limits import capabilities

if TYPE_CHECKING:
    from loradock.serving.config import PeftEngineConfig

log = logging.getLogger(__name__)
START_TIMEOUT_S = 600  # a big base model on a slow disk; a failed start reports at once


class ProcessEngine:
    """A ``PeftEngine`` in a child process, behind the ``Engine`` interface."""

    def __init__(self, base_path: str | Path, options: PeftEngineConfig, *, base_name: str):
        self.base_path = Path(base_path)
        self.base_name = base_name
        self.options = options
        self.capabilities = capabilities(options)
        self.frontend: PromptFrontend | None = None
        self._conn: Any = None
        self._process: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_lock = threading.Lock()
        self._streams: dict[int, asyncio.Queue] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        self._stats: dict[str, float] = {}
        self._loaded: list[str] = []
        self.dead: str | None = None  # why the engine process is gone, once it is
        self._stopping = False

    @classmethod
    def from_config(cls, config: Any, base_path: str | Path) -> ProcessEngine:
        """Build from a ``ServerConfig``'s PEFT options."""
        return cls(base_path, config.peft, base_name=config.base_model_name)

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        from loradock.modeling import load_tokenizer

        self._loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=child_main,
            args=(child_conn, str(self.base_path), self.options, self.base_name),
            name="loradock-engine",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        tokenizer = await self._loop.run_in_executor(None, load_tokenizer, self.base_path)
        self.frontend = PromptFrontend(tokenizer, self.capabilities.max_model_len)
        ready = await self._loop.run_in_executor(None, self._first_message)
        if ready[0] == "failed":
            self._process.join(timeout=10)
            raise ready[1]
        threading.Thread(target=self._read, name="loradock-engine-reader", daemon=True).start()

    def _first_message(self) -> tuple:
        if not self._conn.poll(START_TIMEOUT_S):
            self._process.kill()
            return (
                "failed",
                EngineError(f"the engine process did not start in {START_TIMEOUT_S} s"),
            )
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode
            return ("failed", EngineError(f"the engine process exited while starting ({code})"))

    async def shutdown(self) -> None:
        if self._process is None or self.dead:
            return
        self._stopping = True
        with contextlib.suppress(OSError, ValueError, EngineError):
            self._send(("stop",))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()
        self.dead = self.dead or "stopped"
        with contextlib.suppress(OSError):
            self._conn.close()

    # ---- pipe ----------------------------------------------------------------------------
    def _send(self, message: tuple) -> None:
        if self.dead:
            raise EngineError(f"The model engine is not running ({self.dead}): restart the server.")
        with self._send_lock:
            self._conn.send(message)

    def _read(self) -> None:
        """Reader thread: hand each message to the event loop (one wake-up per message)."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            self._loop.call_soon_threadsafe(self._dispatch, message)
        self._process.join(timeout=2)  # the pipe closes just before the exit code is known
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._died)

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "out":
            _, items, self._stats, self._loaded = message
            for rid, item in items:
                queue = self._streams.get(rid)
                if queue is not None:
                    queue.put_nowait(item)
        elif kind == "stats":
            _, self._stats, self._loaded = message
        elif kind == "ret":
            _, cid, ok, value, self._stats, self._loaded = message
            future = self._calls.pop(cid, None)
            if future is not None and not future.done():
                future.set_result(value) if ok else future.set_exception(value)

    def _died(self) -> None:
        if self.dead:
            return
        if self._stopping:
            self.dead = "stopped"
            return
        self.dead = f"the engine process exited with code {self._process.exitcode}"
        log.error("%s: failing %d waiting requests", self.dead, len(self._streams))
        error = EngineError(f"The model engine stopped ({self.dead}): restart the server.")
        for queue in self._streams.values():
            queue.put_nowait(error)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()

    async def _call(self, method: str, *args: Any) -> Any:
        cid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[cid] = future
        try:
            self._send(("call", cid, method, args))
        except BaseException:
            self._calls.pop(cid, None)
            raise
        return await future

    # ---- Engine API -----------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def health(self) -> str | None:
        return self.dead

    def loaded_adapters(self) -> list[str]:
        return list(self._loaded)

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    async def load(self, adapter: AdapterSpec) -> None:
        await self._call("load", adapter)

    async def unload(self, name: str) -> None:
        await self._call("unload", name)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        ids = self.frontend.encode(request)  # the child gets ids: it never tokenises
        rid = next(self._ids)
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        self._streams[rid] = queue
        finished = False
        try:
            self._send(("gen", rid, replace(request, prompt_token_ids=list(ids))))
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finish_reason is not None
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(rid, None)
            if not finished and not self.dead:
                with contextlib.suppress(OSError, ValueError, EngineError):
                    self._send(("cancel", rid))
