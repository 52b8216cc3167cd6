"""Where a PEFT engine decode step's time goes: ``bench/serving.py``'s profile rows.

The engine runs in this process (no HTTP), ``LIMIT_BATCH`` requests over 8 adapters submitted
together, greedy. Only decode steps with every row running count (prefills and the ragged end
are left out). Two passes over the same workload:

1. plain: only the step's ends are timed (two timers a step), for the step time the limit row
   compares against;
2. broken down: timers around every base linear layer (and the LM head), every LoRA addition
   (``MultiLoraLinear`` less its base layer), the attention function and the output stage
   (sampling, detokenizing, stop checks). "Other" is the rest of the step: embeddings, norms,
   rotary, masks, the KV cache, PyTorch's and the model code's Python. These timers cost a
   microsecond or two each (~8 a layer), so the shares are of pass 2's own step time.

Timers wrap classes and functions of this process only while a pass runs (CPU work is
synchronous; on a GPU each timer synchronizes, which slows the step: shares, not times, then).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.serving_baselines import engine_requests
from bench.serving_limit import LIMIT_BATCH
from bench.serving_setup import PROMPTS, BenchSetup, synchronize

PARTS = ("base linear layers", "LoRA", "attention", "sampling and output", "other")


class _Clock:
    """Seconds per part, counted only inside full-batch decode steps."""

    def __init__(self, device: str, batch: int):
        self.device, self.batch = device, batch
        self.armed = False  # set once the warm-up is over
        self.on = False
        self.steps = 0
        self.step_s = 0.0
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.linear_in_lora = 0.0

    def arm(self) -> None:
        self.armed = True

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


def _timed(clock: _Clock, part: str, fn: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not clock.on:
            return fn(*args, **kwargs)
        t0 = clock.now()
        out = fn(*args, **kwargs)
        clock.parts[part] += clock.now() - t0
        return out

    return wrapper


def _lora_timed(clock: _Clock, fn: Callable) -> Callable:
    """A ``MultiLoraLinear`` call less the base layer inside it (timed as a linear layer)."""

    def wrapper(self: Any, x: Any) -> Any:
        if not clock.on:
            return fn(self, x)
        linear_before = clock.parts["base linear layers"]
        t0 = clock.now()
        out = fn(self, x)
        inside = clock.parts["base linear layers"] - linear_before
        clock.parts["LoRA"] += clock.now() - t0 - inside
        return out

    return wrapper


@contextlib.contextmanager
def _instrumented(clock: _Clock, *, breakdown: bool) -> Iterator[None]:
    import torch

    from loradock.serving.engines.peft import attention, multi_lora, runner, scheduler

    Runner, Scheduler = runner.Runner, scheduler.Scheduler
    saved = [
        (Runner, "decode", Runner.decode),
        (Scheduler, "_emit", Scheduler._emit),
        (torch.nn.Linear, "forward", torch.nn.Linear.forward),
        (multi_lora.MultiLoraLinear, "forward", multi_lora.MultiLoraLinear.forward),
        (attention, "grouped_sdpa_forward", attention.grouped_sdpa_forward),
    ]
    decode, emit = Runner.decode, Scheduler._emit
    started = [0.0]

    def timed_decode(self: Any) -> Any:
        clock.on = clock.armed and len(self.active) == clock.batch
        started[0] = clock.now()
        return decode(self)

    def timed_emit(self: Any, logits: Any, rows: list[int]) -> None:
        if not clock.on:
            return emit(self, logits, rows)
        t0 = clock.now()
        emit(self, logits, rows)
        end = clock.now()
        clock.parts["sampling and output"] += end - t0
        clock.step_s += end - started[0]
        clock.steps += 1
        clock.on = False

    Runner.decode, Scheduler._emit = timed_decode, timed_emit
    if breakdown:  # before the engine loads: it registers the attention function then
        torch.nn.Linear.forward = _timed(clock, "base linear layers", torch.nn.Linear.forward)
        lora = multi_lora.MultiLoraLinear
        lora.forward = _lora_timed(clock, lora.forward)
        attention.grouped_sdpa_forward = _timed(clock, "attention", attention.grouped_sdpa_forward)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def profile_decode(setup: BenchSetup, *, breakdown: bool) -> dict[str, Any]:
    """One pass (see the module's text): the mean full-batch decode step and, with
    ``breakdown``, each part's share of it."""
    clock = _Clock(setup.device, LIMIT_BATCH)
    eight = setup.adapters[:8]
    jobs = [(eight[i % 8], PROMPTS[i % len(PROMPTS)]) for i in range(LIMIT_BATCH)]
    with _instrumented(clock, breakdown=breakdown):
        asyncio.run(
            engine_requests(
                setup, jobs, max_tokens=setup.max_tokens, repeats=1, measuring=clock.arm
            )
        )
    if not clock.steps:
        return {"steps": 0}
    step = clock.step_s / clock.steps
    out: dict[str, Any] = {"steps": clock.steps, "step_ms": round(step * 1000, 3)}
    if breakdown:
        clock.parts["other"] = clock.step_s - sum(clock.parts.values())
        out["shares"] = {p: round(s / clock.step_s, 4) for p, s in clock.parts.items()}
        out["ms"] = {p: round(s / clock.steps * 1000, 3) for p, s in clock.parts.items()}
    return out
