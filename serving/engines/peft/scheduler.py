"""The scheduler: the request queue and the model thread's loop, one forward per step.

Requests wait in a queue (``max_queue``, then ``QueueFullError``). The model thread admits
them between steps, as many as the batch has room for (``max_batch_size``) and their adapters
slots: admitting attaches each adapter (``AdapterCache.try_attach``) and pins its slot while
the sequence runs. When every slot is pinned, the oldest request needing a slot goes first
(newer adapter requests wait, so slots drain: no starvation).

Arrivals are gathered into one prefill: they are admitted once none has come for
``max_wait_ms`` (a burst keeps them waiting, up to ``BURST_WAITS`` max_waits in all) or the
batch would be full; a lone request waits one max_wait. Arrivals with the same prompt and
adapter (a request's ``n`` choices) share one row of their prefill (``prefill.py``). Every
step then runs ONE forward pass over all running sequences, whatever adapter each uses
(``runner.py``); its logits go to the output stage (``output.py``), finished rows leave the
batch at once, and the step's chunks are handed to their sinks once (``delivery.py``).

The model thread owns the model: attaching and evicting adapters and the engine's commands
(``call``: admin preload, unload) also run here, between steps, so no forward ever sees a
half-attached adapter.

A failure ends only the requests it concerns, each with its pin released once: a row the
output stage cannot sample, that row; a prefill forward that raises, the arrivals in that
prefill (the running batch is untouched); a decode forward that raises, the running rows,
all of which were in it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from loradock.errors import QueueFullError
from loradock.serving.engines.peft.adapter_cache import AdapterCache, CpuAdapter
from loradock.serving.engines.peft.delivery import deliver_all
from loradock.serving.engines.peft.output import OutputStage
from loradock.serving.engines.peft.prefill import shared_prefill_groups
from loradock.serving.engines.peft.runner import Runner
from loradock.serving.engines.peft.sequence import Sequence

log = logging.getLogger(__name__)
BURST_WAITS = 8  # a burst of arrivals is gathered for at most this many max_waits


class Scheduler:
    def __init__(
        self,
        *,
        runner: Runner,
        output: OutputStage,
        cache: AdapterCache,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        threads: int | None,
    ):
        self.runner = runner
        self.output = output
        self.cache = cache
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.threads = threads
        self._cond = threading.Condition()
        self._pending: deque[Sequence] = deque()
        self._commands: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._running = False
        self._thread: threading.Thread | None = None
        self._joining: list[Sequence] = []  # admitted (pinned) this step, not prefilled yet
        self.stats: dict[str, float] = {
            "steps": 0,
            "batched_rows": 0,
            "max_batch_seen": 0,
            # seconds of the model thread: where an engine's time goes (/metrics, the bench)
            "prefill_seconds": 0.0,
            "decode_seconds": 0.0,
            "idle_seconds": 0.0,  # nothing to run, or gathering a burst of arrivals
            # prompt tokens prefilled, and those copied from another prompt's (prefix.py)
            "prompt_tokens_computed": 0,
            "prompt_tokens_reused": 0,
        }

    # ---- any thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="loradock-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def queue_depth(self) -> int:
        return len(self._pending)

    def running(self) -> int:
        return len(self.runner.active)

    def submit(self, seq: Sequence) -> None:
        with self._cond:
            if len(self._pending) >= self.max_queue:
                raise QueueFullError(
                    f"The server's queue is full ({self.max_queue} requests waiting): "
                    "retry after a short wait, or raise --max-queue."
                )
            self._pending.append(seq)
            self._cond.notify_all()

    def loaded(self, seq: Sequence, adapter: CpuAdapter | None) -> None:
        """``seq``'s adapter is in memory (``adapter``), or failed to load (None: ``seq`` is
        cancelled and its error already sent): it may be admitted now."""
        with self._cond:
            if adapter is None:
                seq.cancelled = True
            else:
                seq.adapter = adapter
            seq.loading = False
            self._cond.notify_all()

    def call(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Run ``fn`` on the model thread between steps; await the returned future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._commands.append((fn, future))
            self._cond.notify_all()
        return asyncio.wrap_future(future)

    # ---- model thread ---------------------------------------------------------------------
    def _run(self) -> None:
        if self.threads:
            # Per thread: the model thread's own intra-op pool (oversubscribed CPUs suffer).
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while self._running:
                try:
                    self._step()
                except Exception as exc:  # a failed step must not take the server down
                    # Only a decode forward (or worse) gets here: every running row was in it,
                    # and the KV cache may be half-updated, so the batch starts afresh.
                    log.exception("generation step failed")
                    self._fail([*self.runner.active, *self._joining], exc)
                    self._joining = []
                    self.runner.reset()

    def _step(self) -> None:
        self._run_commands()
        started = time.perf_counter()
        new = self._admit()
        admitted = time.perf_counter()
        self.stats["idle_seconds"] += admitted - started
        if new:
            groups = shared_prefill_groups(new)
            for n, group in enumerate(groups):
                self._joining = [seq for later in groups[n + 1 :] for seq in later]
                self._prefill(group)
            self.stats["prefill_seconds"] += time.perf_counter() - admitted
        elif self.runner.active:
            self._emit(*self.runner.decode())
            self.stats["decode_seconds"] += time.perf_counter() - admitted

    def _prefill(self, group: list[Sequence]) -> None:
        """Prefill ``group`` into the batch. A prefill that raises leaves the running batch as
        it was (``Runner.prefill``): only ``group``'s requests fail."""
        try:
            logits, rows = self.runner.prefill(group)
        except Exception as exc:
            log.exception("prefill of %d requests failed", len(group))
            self._fail(group, exc)
            return
        computed, reused = self.runner.last_prefill_tokens
        self.stats["prompt_tokens_computed"] += computed
        self.stats["prompt_tokens_reused"] += reused
        self._emit(logits, rows)

    def _fail(self, seqs: list[Sequence], exc: Exception) -> None:
        """End ``seqs`` with ``exc``: their pins released, the error sent to each request."""
        for seq in seqs:
            self._release(seq)
            seq.fail(exc)

    def _emit(self, logits: torch.Tensor, rows: list[int]) -> None:
        active = self.runner.active
        self.stats["steps"] += 1
        self.stats["batched_rows"] += len(active)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(active))
        finished, outbox = self.output.step(active, logits, rows)
        if finished:
            for row in finished:
                self._release(active[row])
            self.runner.drop(finished)
        deliver_all(outbox)

    def _run_commands(self) -> None:
        while self._commands:
            fn, future = self._commands.popleft()
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

    def _admit(self) -> list[Sequence]:
        with self._cond:
            if not self.runner.active:
                if not self._commands and all(s.loading for s in self._pending):
                    # Nothing to run, or only requests whose adapters are being read: sleep
                    # until an arrival, a finished read or a command (never spin).
                    self._cond.wait(timeout=0.5)
                # Nothing running: a burst of requests should share one prefill. Wait while
                # they keep coming (each within max_wait of the last), up to BURST_WAITS
                # max_waits in all; a lone request waits one max_wait.
                while self._running and self._pending and not self._gathered():
                    self._cond.wait(timeout=self._gather_left())
            room = self.max_batch_size - len(self.runner.active)
            if (
                self.runner.active
                and self._pending
                and len(self._pending) < room
                and not self._gathered()
            ):
                # Decoding already: let arrivals gather the same way, so they share one
                # prefill instead of each costing the running batch a step of its own.
                return []
            return self._take(room)

    def _take(self, room: int) -> list[Sequence]:
        """Up to ``room`` queued sequences whose adapters could attach (lock held)."""
        admitted: list[Sequence] = []
        waiting: deque[Sequence] = deque()
        blocked = False  # an older request waits for a slot: stop pinning slots for newer ones
        while self._pending:
            seq = self._pending.popleft()
            if seq.cancelled:
                continue
            if seq.loading:
                waiting.append(seq)
                continue
            if len(admitted) < room and not (blocked and seq.adapter is not None):
                try:
                    slot = 0 if seq.adapter is None else self.cache.try_attach(seq.adapter)
                except Exception as exc:  # this adapter cannot attach: fail its request only
                    seq.fail(exc)
                    continue
                if slot is not None:
                    if seq.adapter is not None:
                        self.cache.pin(seq.adapter.key)
                        seq.pinned = True
                    seq.slot = slot
                    admitted.append(seq)
                    continue
            # Batch full, or every slot pinned: the slots drain as running sequences finish,
            # and the oldest waiting request gets the first one (no starvation).
            blocked = blocked or (seq.adapter is not None and len(admitted) < room)
            waiting.append(seq)
        self._pending = waiting
        return admitted

    def _gathered(self) -> bool:
        """Admit now: the batch would be full, arrivals paused, or the oldest waited enough."""
        pending = self._pending
        if len(pending) + len(self.runner.active) >= self.max_batch_size:
            return True
        now = time.perf_counter()
        return (
            now - pending[-1].enqueued_at >= self.max_wait_s
            or now - pending[0].enqueued_at >= self.max_wait_s * BURST_WAITS
        )

    def _gather_left(self) -> float:
        now = time.perf_counter()
        pause = self._pending[-1].enqueued_at + self.max_wait_s - now
        cap = self._pending[0].enqueued_at + self.max_wait_s * BURST_WAITS - now
        return max(min(pause, cap), 0.0005)

    def _release(self, seq: Sequence) -> None:
        """Unpin ``seq``'s slot, once however many paths end it."""
        if seq.pinned:
            seq.pinned = False
            self.cache.unpin(seq.adapter.key)
