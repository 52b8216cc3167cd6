"""The engine process: a ``PeftEngine`` serving the requests one pipe brings (see ``process.py``).

Its model thread sends each step's chunks for all its requests as ONE pipe message, straight
from the step (``PipeSink``): a token crosses the pipe, then the HTTP process's reader thread
hands the message to its event loop. The child's own event loop only takes requests in
(``submit``), reads adapters, runs load/unload calls and reports stats while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.serving.engines.base import GenerationChunk

if TYPE_CHECKING:
    from loradock.serving.config import PeftEngineConfig
    from loradock.serving.engines.peft.engine import PeftEngine

STATS_INTERVAL_S = 0.25  # an idle engine's stats reach /metrics this late at most


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` carrying its type and text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class Channel:
    """The child's end of the pipe: sends from any thread, each message with a fresh snapshot
    of the engine's stats and loaded adapters (what the HTTP process's ``/metrics`` and
    ``/health`` answer from)."""

    def __init__(self, conn: Any, engine: PeftEngine):
        self.conn = conn
        self.engine = engine
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[dict[str, float], list[str]]:
        return self.engine.stats(), self.engine.loaded_adapters()

    def send(self, *message: Any) -> None:
        with self._lock, contextlib.suppress(OSError):  # the HTTP process is gone
            self.conn.send(message)


class PipeSink:
    """The ``Sink`` of every request in the engine process; ``reply_to`` is the request id."""

    def __init__(self, channel: Channel):
        self.channel = channel

    def deliver(self, items: list[tuple[int, GenerationChunk]]) -> None:
        self.channel.send("out", items, *self.channel.snapshot())

    def fail(self, reply_to: int, error: BaseException) -> None:
        self.channel.send("out", [(reply_to, portable(error))], *self.channel.snapshot())


def child_main(conn: Any, base_path: str, options: PeftEngineConfig, base_name: str) -> None:
    """Entry point of the engine process: run a ``PeftEngine`` until told to stop."""
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the HTTP process stops this one
    # in order (its lifespan sends "stop"), and if it dies the pipe closes and this one stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(conn, Path(base_path), options, base_name))


async def _serve(conn: Any, base_path: Path, options: PeftEngineConfig, base_name: str) -> None:
    from loradock.serving.engines.peft.engine import PeftEngine

    engine = PeftEngine(base_path, options, base_name=base_name)
    try:
        await engine.start()
    except BaseException as exc:
        conn.send(("failed", portable(exc)))
        return
    conn.send(("ready", {"pid": multiprocessing.current_process().pid}))
    channel = Channel(conn, engine)
    server = _Requests(engine, channel)
    threading.Thread(target=server.read, name="loradock-engine-input", daemon=True).start()
    reporter = asyncio.get_running_loop().create_task(_report_stats(channel))
    await server.stopped.wait()
    reporter.cancel()
    await engine.shutdown()


class _Requests:
    """The child's event-loop side: what the HTTP process asks, one message at a time."""

    def __init__(self, engine: PeftEngine, channel: Channel):
        self.engine = engine
        self.channel = channel
        self.sink = PipeSink(channel)
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        # request id -> its sequence, for cancels; weak: a finished sequence leaves by itself
        self.sequences: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self.preparing: set[int] = set()  # requests whose output constraint is compiling

    def read(self) -> None:
        """Input thread: each message to the event loop."""
        while True:
            try:
                message = self.channel.conn.recv()
            except (EOFError, OSError):  # the HTTP process is gone: stop too
                message = ("stop",)
            self.loop.call_soon_threadsafe(self.handle, message)
            if message[0] == "stop":
                return

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "gen":
            _, rid, request = message
            if request.structured is not None:  # its grammar compiles first, off this loop
                self.preparing.add(rid)
                self.loop.create_task(self.prepare(rid, request))
                return
            self.submit(rid, request, None)
        elif kind == "cancel":
            self.preparing.discard(message[1])
            seq = self.sequences.get(message[1])
            if seq is not None:
                seq.cancelled = True
        elif kind == "call":
            self.loop.create_task(self.call(*message[1:]))
        elif kind == "stop":
            self.stopped.set()

    def submit(self, rid: int, request: Any, grammar: Any) -> None:
        try:
            self.sequences[rid] = self.engine.submit(request, self.sink, rid, grammar)
        except Exception as exc:
            self.sink.fail(rid, exc)

    async def prepare(self, rid: int, request: Any) -> None:
        try:
            grammar = await self.engine.prepare(request)
        except Exception as exc:
            self.preparing.discard(rid)
            self.sink.fail(rid, exc)
            return
        if rid in self.preparing:  # else cancelled meanwhile
            self.preparing.discard(rid)
            self.submit(rid, request, grammar)

    async def call(self, cid: int, method: str, args: tuple) -> None:
        try:
            value, ok = await getattr(self.engine, method)(*args), True
        except Exception as exc:
            value, ok = portable(exc), False
        self.channel.send("ret", cid, ok, value, *self.channel.snapshot())


async def _report_stats(channel: Channel) -> None:
    # Messages carry stats, but none come once the engine is idle: without these, the last
    # snapshot (say running=1) would stand in /metrics until the next request.
    last = None
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        snapshot = channel.snapshot()
        if snapshot != last:
            channel.send("stats", *snapshot)
            last = snapshot
