"""Continuous batching across adapters: one model thread, one KV cache, one forward per step.

Every step runs ONE forward pass over all running sequences, whatever adapter each uses
(PEFT's ``adapter_names`` routes each row through its own LoRA weights, ``"__base__"`` through
none). New requests join between steps: they are prefilled together (left-padded), and their
KV cache is padded on the left and stacked onto the running batch. A sequence that finishes
leaves the batch at once (its cache rows are dropped), and each token is streamed out the step
it is sampled, so short answers do not wait for long ones.

The model thread owns the model: attaching and evicting adapters also happen here, between
steps, so no forward ever sees a half-attached adapter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from loradock.errors import QueueFullError
from loradock.serving.engines.base import GenerationChunk, GenerationRequest
from loradock.serving.engines.peft.adapter_cache import AdapterCache, CpuAdapter
from loradock.serving.engines.peft.decoding import TextState, make_generator, sample_next
from loradock.serving.engines.peft.prefill import prefill_groups

log = logging.getLogger(__name__)
BASE_ADAPTER = "__base__"
BURST_WAITS = 8  # a burst of arrivals is gathered for at most this many max_waits

# forward(input_ids, attention_mask, position_ids, past, adapter_names) -> (last logits, past)
ForwardFn = Callable[[Any, Any, Any, Any, list[str]], tuple[Any, Any]]


@dataclass
class Sequence:
    request: GenerationRequest
    prompt_ids: list[int]
    adapter: CpuAdapter | None
    max_new: int
    text: TextState
    emit: Callable[[GenerationChunk | BaseException], None]
    # With both set, a step's chunks reach every waiting request in ONE loop callback (waking
    # the event loop once per sequence per token cost the model thread 14% of a step).
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue | None = None
    gen: torch.Generator | None = None
    cancelled: bool = False
    # The adapter is still being read from disk (``ContinuousBatcher.loaded`` clears it): the
    # sequence waits in the queue meanwhile, so the read overlaps the arrival-gathering wait
    # instead of coming before it, and it holds up nobody.
    loading: bool = False
    generated: int = 0
    pos: int = 0  # position id of the next input token
    last_token: int = 0
    held_text: str = ""  # a non-streaming request's text and ids not sent yet
    held_ids: list[int] = field(default_factory=list)
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def adapter_name(self) -> str:
        return self.adapter.key if self.adapter else BASE_ADAPTER


class ContinuousBatcher:
    def __init__(
        self,
        *,
        forward: ForwardFn,
        cache: AdapterCache,
        tokenizer: Any,
        eos_ids: set[int],
        pad_id: int,
        device: str,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        threads: int | None = None,
    ):
        self.threads = threads
        self._forward = forward
        self._cache = cache
        self._tokenizer = tokenizer
        self._eos = eos_ids
        self._pad = pad_id
        self._device = device
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._pending: deque[Sequence] = deque()
        self._commands: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._active: list[Sequence] = []
        self._past: Any = None
        self._mask: torch.Tensor | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self.stats: dict[str, float] = {
            "steps": 0,
            "batched_rows": 0,
            "max_batch_seen": 0,
            # seconds of the model thread: where an engine's time goes (/metrics, the bench)
            "prefill_seconds": 0.0,
            "decode_seconds": 0.0,
            "idle_seconds": 0.0,  # nothing to run, or gathering a burst of arrivals
        }

    # ---- event-loop side ------------------------------------------------------------------
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
        return len(self._active)

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
        cancelled and its error already emitted): it may be admitted now."""
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
                    self._run_commands()
                    started = time.perf_counter()
                    new = self._admit()
                    admitted = time.perf_counter()
                    self.stats["idle_seconds"] += admitted - started
                    if new:
                        self._prefill(new)
                        self.stats["prefill_seconds"] += time.perf_counter() - admitted
                    elif self._active:
                        self._decode()
                        self.stats["decode_seconds"] += time.perf_counter() - admitted
                except Exception as exc:  # a failed step must not take the server down
                    log.exception("generation step failed")
                    for seq in self._active:
                        self._release(seq)
                        seq.emit(exc)
                    self._active, self._past, self._mask = [], None, None

    def _run_commands(self) -> None:
        while self._commands:
            fn, future = self._commands.popleft()
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

    def _admit(self) -> list[Sequence]:
        with self._cond:
            if not self._active:
                if not self._commands and all(s.loading for s in self._pending):
                    # Nothing to run, or only requests whose adapters are being read: sleep
                    # until an arrival, a finished read or a command (never spin).
                    self._cond.wait(timeout=0.5)
                # Nothing running: a burst of requests should share one prefill. Wait while
                # they keep coming (each within max_wait of the last), up to BURST_WAITS
                # max_waits in all; a lone request waits one max_wait.
                while self._running and self._pending and not self._gathered():
                    self._cond.wait(timeout=self._gather_left())
            room = self.max_batch_size - len(self._active)
            if (
                self._active
                and self._pending
                and len(self._pending) < room
                and not self._gathered()
            ):
                # Decoding already: let arrivals gather the same way, so they share one
                # prefill instead of each costing the running batch a step of its own.
                return []
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
                try:
                    ready = (
                        len(admitted) < room
                        and not (blocked and seq.adapter is not None)
                        and (seq.adapter is None or self._cache.try_attach(seq.adapter))
                    )
                except Exception as exc:  # this adapter cannot attach: fail its request only
                    seq.emit(exc)
                    continue
                if ready:
                    if seq.adapter is not None:
                        self._cache.pin(seq.adapter_name)
                    admitted.append(seq)
                else:
                    # Batch full, or every slot pinned: the slots drain as running sequences
                    # finish, and the oldest waiting request gets the first one (no starvation).
                    blocked = blocked or (seq.adapter is not None and len(admitted) < room)
                    waiting.append(seq)
            self._pending = waiting
        return admitted

    def _gathered(self) -> bool:
        """Admit now: the batch would be full, arrivals paused, or the oldest waited enough."""
        pending = self._pending
        if len(pending) + len(self._active) >= self.max_batch_size:
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

    def _prefill(self, new: list[Sequence]) -> None:
        for group in prefill_groups([len(s.prompt_ids) for s in new]):
            self._prefill_group([new[i] for i in group])

    def _prefill_group(self, new: list[Sequence]) -> None:
        width = max(len(s.prompt_ids) for s in new)
        ids = torch.full((len(new), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for row, seq in enumerate(new):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids)
            mask[row, width - n :] = 1
            seq.pos = n
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, past = self._forward(
            ids.to(self._device),
            mask.to(self._device),
            positions.to(self._device),
            None,
            [self._slot(s) for s in new],
        )
        if self._active:
            past, mask = self._merge(past, mask)
            self._active = self._active + new
            logits_rows = range(len(self._active) - len(new), len(self._active))
        else:
            self._active = new
            logits_rows = range(len(new))
        self._past, self._mask = past, mask
        self._sample_and_emit(logits, list(logits_rows))

    def _merge(self, past: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Stack a freshly prefilled cache under the running one, left-padding the shorter."""
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        for old_layer, new_layer in zip(self._past.layers, past.layers, strict=True):
            for attr in ("keys", "values"):
                a = F.pad(getattr(old_layer, attr), (0, 0, width - old_t, 0))
                b = F.pad(getattr(new_layer, attr), (0, 0, width - new_t, 0))
                setattr(old_layer, attr, torch.cat([a, b], dim=0))
        merged_mask = torch.cat(
            [F.pad(self._mask, (width - old_t, 0)), F.pad(mask, (width - new_t, 0))], dim=0
        )
        return self._past, merged_mask

    def _decode(self) -> None:
        ids = torch.tensor([[s.last_token] for s in self._active], dtype=torch.long)
        positions = torch.tensor([[s.pos] for s in self._active], dtype=torch.long)
        self._mask = torch.cat(
            [self._mask, torch.ones((len(self._active), 1), dtype=torch.long)], dim=1
        )
        logits, self._past = self._forward(
            ids.to(self._device),
            self._mask.to(self._device),
            positions.to(self._device),
            self._past,
            [self._slot(s) for s in self._active],
        )
        self._sample_and_emit(logits, list(range(len(self._active))))

    def _slot(self, seq: Sequence) -> str:
        return self._cache.slot_of(seq.adapter.key) if seq.adapter else BASE_ADAPTER

    def _sample_and_emit(self, logits: torch.Tensor, rows: list[int]) -> None:
        self.stats["steps"] += 1
        self.stats["batched_rows"] += len(self._active)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(self._active))
        logits = logits.float().cpu()
        greedy = logits.argmax(dim=-1).tolist()  # one call for every greedy row
        finished: set[int] = set()
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, GenerationChunk]]] = {}
        for i, row in enumerate(rows):
            seq = self._active[row]
            if seq.cancelled:
                finished.add(row)
                continue
            if seq.generated == 0:
                seq.gen = make_generator(seq.request.sampling.seed)
            params = seq.request.sampling
            token = (
                greedy[i] if params.temperature == 0 else sample_next(logits[i], params, seq.gen)
            )
            seq.generated += 1
            seq.pos += 1
            seq.last_token = token
            reason = None
            # Sent whole, no stop strings: nothing to decode until the end (see below).
            quiet = not seq.request.stream and seq.generated > 1 and not seq.text.stop
            if token in self._eos:
                delta, reason = seq.text.flush(), "stop"
            elif quiet:
                seq.text.add_quietly(token)
                delta, reason = "", None
                if seq.generated >= seq.max_new:
                    delta, reason = seq.text.flush(), "length"
            else:
                delta = seq.text.add(token)
                if seq.text.stopped:
                    reason = "stop"
                elif seq.generated >= seq.max_new:
                    delta, reason = delta + seq.text.flush(), "length"
            if not seq.request.stream and seq.generated > 1:
                # The whole answer is all it wants: hold tokens after the first (TTFT) and
                # send them at the end, one event-loop wake-up instead of one per token.
                if reason is None:
                    seq.held_text += delta
                    seq.held_ids.append(token)
                    continue
                delta, seq.held_text = seq.held_text + delta, ""
                token_ids, seq.held_ids = [*seq.held_ids, token], []
            else:
                token_ids = [token]
            chunk = GenerationChunk(
                text=delta,
                token_ids=token_ids,
                prompt_tokens=len(seq.prompt_ids),
                completion_tokens=seq.generated,
                finish_reason=reason,
            )
            if seq.loop is not None and seq.queue is not None:
                outbox.setdefault(seq.loop, []).append((seq.queue, chunk))
            else:
                seq.emit(chunk)
            if reason is not None:
                finished.add(row)
        for loop, items in outbox.items():
            with contextlib.suppress(RuntimeError):  # that loop closed: its clients are gone
                loop.call_soon_threadsafe(_put_all, items)
        if finished:
            self._drop(finished)

    def _drop(self, rows: set[int]) -> None:
        keep = [i for i in range(len(self._active)) if i not in rows]
        for i in rows:
            self._release(self._active[i])
        if not keep:
            self._active, self._past, self._mask = [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = self._mask[index]
        # Columns every remaining row pads: drop them so the cache does not grow without end.
        used = mask.sum(dim=0).nonzero()
        start = int(used[0].item()) if len(used) else 0
        for layer in self._past.layers:
            rows = index.to(layer.keys.device)
            layer.keys = layer.keys[rows, :, start:, :]
            layer.values = layer.values[rows, :, start:, :]
        self._mask = mask[:, start:]
        self._active = [self._active[i] for i in keep]

    def _release(self, seq: Sequence) -> None:
        if seq.adapter is not None:
            self._cache.unpin(seq.adapter_name)


def _put_all(items: list[tuple[asyncio.Queue, GenerationChunk]]) -> None:
    for queue, chunk in items:
        queue.put_nowait(chunk)
