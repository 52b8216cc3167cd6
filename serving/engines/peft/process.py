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
``loaded_adapters()`` answer from the snapshot every message carries.

If the child dies (killed, out of memory), every waiting request fails at once with
``EngineError`` (503 with ``Retry-After``: when the supervisor expects the new child to
serve), and so does every request until a new child is ready: the engine process is
restarted after a backoff (``supervisor.py``) and the adapters that were attached are
attached again, by the names and specs they were served under. A crash loop stops the
restarts (503 without ``Retry-After``); ``/health`` and ``/metrics`` show the restarts and
why.
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
from loradock.serving.engines.peft.supervisor import RestartPolicy, Supervisor

if TYPE_CHECKING:
    from loradock.serving.config import PeftEngineConfig

log = logging.getLogger(__name__)
START_TIMEOUT_S = 600  # a big base model on a slow disk; a failed start reports at once
SPECS_KEPT = 256  # adapter specs remembered (to attach again after a restart) before pruning


class ProcessEngine:
    """A ``PeftEngine`` in a child process, behind the ``Engine`` interface."""

    def __init__(self, base_path: str | Path, options: PeftEngineConfig, *, base_name: str):
        self.base_path = Path(base_path)
        self.base_name = base_name
        self.options = options
        self.capabilities = capabilities(options)
        self.frontend: PromptFrontend | None = None
        self.supervisor = Supervisor(RestartPolicy.from_options(options))
        self._conn: Any = None
        self._process: Any = None
        self._generation = 0  # which child the reader thread of a message belongs to
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_lock = threading.Lock()
        self._streams: dict[int, asyncio.Queue] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        self._stats: dict[str, float] = {}
        self._loaded: list[str] = []
        self._specs: dict[str, AdapterSpec] = {}  # served name -> spec, to attach again
        self._restart: asyncio.Task | None = None
        self.restarting: str | None = None  # why the engine process is down, while it restarts
        self.dead: str | None = None  # why it is gone for good (a crash loop, or stopped)
        self._stopping = False

    @classmethod
    def from_config(cls, config: Any, base_path: str | Path) -> ProcessEngine:
        """Build from a ``ServerConfig``'s PEFT options."""
        return cls(base_path, config.peft, base_name=config.base_model_name)

    @property
    def pid(self) -> int | None:
        """The engine process's id (None before it starts)."""
        return None if self._process is None else self._process.pid

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        from loradock.modeling import load_tokenizer

        self._loop = asyncio.get_running_loop()
        began = self.supervisor.clock()
        spawning = asyncio.ensure_future(self._spawn())  # the child loads while we tokenise
        tokenizer = await self._loop.run_in_executor(None, load_tokenizer, self.base_path)
        self.frontend = PromptFrontend(tokenizer, self.capabilities.max_model_len)
        await spawning
        self.supervisor.started(self.supervisor.clock() - began)

    async def _spawn(self) -> None:
        """Start an engine process and wait until it is ready (or raise why it is not)."""
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        conn, child_conn = context.Pipe()
        process = context.Process(
            target=child_main,
            args=(child_conn, str(self.base_path), self.options, self.base_name),
            name="loradock-engine",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self._process = process
        ready = await self._loop.run_in_executor(None, _first_message, conn, process)
        if ready[0] == "failed":
            await self._loop.run_in_executor(None, process.join, 10)
            conn.close()
            raise ready[1]
        self._conn = conn
        self._generation += 1
        reader = threading.Thread(
            target=self._read,
            args=(conn, process, self._generation),
            name="loradock-engine-reader",
            daemon=True,
        )
        reader.start()

    async def shutdown(self) -> None:
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        if self._process is None or self.dead:
            return
        if self.restarting:  # dead or half started: nothing to stop in order
            self._process.kill()
        with contextlib.suppress(OSError, ValueError, EngineError):
            self._send(("stop",))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()
        self.dead = self.dead or "stopped"
        with contextlib.suppress(OSError, AttributeError):
            self._conn.close()

    # ---- pipe ----------------------------------------------------------------------------
    def _send(self, message: tuple, *, restart: bool = False) -> None:
        """Send ``message`` to the engine process; ``restart``: the restart's own messages,
        which go before any request does."""
        if self.dead:
            raise _unavailable(
                f"The model engine is not running ({self.dead}): restart the server.", None
            )
        if (self.restarting and not restart) or self._conn is None:
            wait = self.supervisor.retry_after_s()
            raise _unavailable(
                f"The model engine is restarting ({self.restarting}): retry in {wait} s.", wait
            )
        with self._send_lock:
            self._conn.send(message)

    def _read(self, conn: Any, process: Any, generation: int) -> None:
        """Reader thread of one engine process: hand each message to the event loop (one
        wake-up per message), then its death."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self._loop.call_soon_threadsafe(self._dispatch, message)
        process.join(timeout=2)  # the pipe closes just before the exit code is known
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._died, process, generation)

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

    # ---- supervision ----------------------------------------------------------------------
    def _died(self, process: Any, generation: int) -> None:
        if generation != self._generation or self.dead:
            return
        if self._stopping:
            self.dead = "stopped"
            return
        reason = f"the engine process exited with code {process.exitcode}"
        with contextlib.suppress(OSError):
            self._conn.close()
        self._conn = None
        attached = [self._specs[n] for n in self._loaded if n in self._specs]
        self._stats, self._loaded = {}, []
        delay = self.supervisor.died(reason)
        if delay is None:
            self.dead = self.supervisor.gave_up
            error = _unavailable(
                f"The model engine stopped ({self.dead}): restart the server.", None
            )
        else:
            self.restarting = reason
            wait = self.supervisor.retry_after_s()
            error = _unavailable(f"The model engine stopped ({reason}): retry in {wait} s.", wait)
            self._restart = self._loop.create_task(self._restart_after(delay, attached))
        log.error("%s: failing %d waiting requests", reason, len(self._streams))
        for queue in self._streams.values():
            queue.put_nowait(error)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()

    async def _restart_after(self, delay: float, attached: list[AdapterSpec]) -> None:
        """Start a new engine process after ``delay`` (again after each failed start, as the
        supervisor says), then attach again the adapters the dead one had attached."""
        while True:
            log.warning("restarting the engine process in %.1f s", delay)
            await asyncio.sleep(delay)
            began = self.supervisor.clock()
            try:
                await self._spawn()
                break
            except Exception as exc:
                delay = self.supervisor.died(f"a restart failed: {exc}")
                if delay is None:
                    self.dead, self.restarting = self.supervisor.gave_up, None
                    log.error("engine not restarted again: %s", self.dead)
                    return
        # Attached again before requests come back, so none takes their slots first.
        log.warning("engine process restarted; attaching %d adapters again", len(attached))
        generation = self._generation
        for spec in attached:
            try:
                await self._call("load", spec, restart=True)
            except Exception as exc:  # the others still come back
                log.warning("adapter %s not attached again: %s", spec.name, exc)
        if self._generation != generation or self._conn is None:
            return  # it died again meanwhile: that death's restart takes over
        self.supervisor.restarted(self.supervisor.clock() - began)
        self.restarting = None

    def supervision(self) -> dict[str, Any]:
        """The engine process's state and restarts (``/health``)."""
        state = "stopped" if self.dead else "restarting" if self.restarting else "running"
        return self.supervisor.report(state)

    # ---- Engine API -----------------------------------------------------------------------
    async def _call(self, method: str, *args: Any, restart: bool = False) -> Any:
        cid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[cid] = future
        try:
            self._send(("call", cid, method, args), restart=restart)
        except BaseException:
            self._calls.pop(cid, None)
            raise
        return await future

    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def health(self) -> str | None:
        return self.dead or self.restarting

    def loaded_adapters(self) -> list[str]:
        return list(self._loaded)

    def stats(self) -> dict[str, float]:
        up = not (self.dead or self.restarting)
        return {**self._stats, "engine_restarts": self.supervisor.restarts, "engine_up": up}

    async def load(self, adapter: AdapterSpec) -> None:
        await self._call("load", adapter)
        self._remember(adapter)

    async def unload(self, name: str) -> None:
        await self._call("unload", name)
        self._specs.pop(name, None)

    def _remember(self, adapter: AdapterSpec) -> None:
        """Keep ``adapter``'s spec by its served name, to attach it again after a restart."""
        self._specs[adapter.name] = adapter
        if len(self._specs) > SPECS_KEPT:  # only attached ones are needed: drop the rest
            keep = {*self._loaded, adapter.name}
            self._specs = {n: s for n, s in self._specs.items() if n in keep}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        ids = self.frontend.encode(request)  # the child gets ids: it never tokenises
        rid = next(self._ids)
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        self._send(("gen", rid, replace(request, prompt_token_ids=list(ids))))
        if request.adapter is not None:
            self._remember(request.adapter)
        self._streams[rid] = queue
        finished = False
        try:
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
            if not finished:  # the client left, or its deadline passed: free its row
                with contextlib.suppress(OSError, ValueError, EngineError):
                    self._send(("cancel", rid))


def _unavailable(message: str, retry_after_s: int | None) -> EngineError:
    """A 503 saying when to try again (``Retry-After``; None: waiting will not help)."""
    error = EngineError(message)
    error.retry_after_s = retry_after_s
    return error


def _first_message(conn: Any, process: Any) -> tuple:
    """The engine process's first message: ready, or failed with its error."""
    if not conn.poll(START_TIMEOUT_S):
        process.kill()
        return ("failed", EngineError(f"the engine process did not start in {START_TIMEOUT_S} s"))
    try:
        return conn.recv()
    except (EOFError, OSError):
        code = process.exitcode
        return ("failed", EngineError(f"the engine process exited while starting ({code})"))
