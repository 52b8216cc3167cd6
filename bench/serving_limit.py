"""The limit row of ``bench/serving.py``: what this machine's matmuls allow a decode step.

A decode step of a dense decoder at batch ``B`` runs, per layer, ``x @ W.T`` for q, k, v, o,
gate, up and down (``x`` of ``B`` rows), then the LM head once. Those products are most of its
arithmetic and, for a model larger than the caches, most of its memory traffic (every weight
is read once a step). Timing exactly these products, with weights laid out as in the model
(one tensor each, so a pass reads them from memory as the model does), on the bench's device,
dtype and threads, gives the step time no engine can beat with these kernels: the limit, in
tokens/s ``B / step``. Every throughput row is reported as a fraction of it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.serving_setup import BenchSetup, Row

LIMIT_BATCH = 32  # the bench's concurrent clients: the batch its throughput rows decode at


@dataclass(frozen=True)
class LinearLimit:
    batch: int
    step_s: float  # the fastest full pass over every linear layer
    flops: float  # multiply-adds x 2 in one pass

    @property
    def tps(self) -> float:
        return self.batch / self.step_s

    @property
    def gflops(self) -> float:
        return self.flops / self.step_s / 1e9


def linear_shapes(config: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(name, in_features, out_features)`` of every linear product in one decode step, in
    the model's order: each layer's q, k, v, o, gate, up, down, then the LM head."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    inter = config["intermediate_size"]
    layer = [
        ("q_proj", hidden, heads * head_dim),
        ("k_proj", hidden, kv_heads * head_dim),
        ("v_proj", hidden, kv_heads * head_dim),
        ("o_proj", heads * head_dim, hidden),
        ("gate_proj", hidden, inter),
        ("up_proj", hidden, inter),
        ("down_proj", inter, hidden),
    ]
    return layer * config["num_hidden_layers"] + [("lm_head", hidden, config["vocab_size"])]


def measure_linear_limit(
    config: dict[str, Any],
    *,
    batch: int = LIMIT_BATCH,
    dtype: str = "float32",
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 5,
) -> LinearLimit:
    """The fastest of ``repeats`` passes over :func:`linear_shapes` (after one warm-up pass):
    a shared machine's other work only ever slows a pass down."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    kind = getattr(torch, dtype)
    shapes = linear_shapes(config)
    gen = torch.Generator().manual_seed(0)
    weights = [
        (torch.randn(out, inp, generator=gen) * inp**-0.5).to(kind).to(device)
        for _, inp, out in shapes
    ]
    inputs = {
        inp: torch.randn(batch, inp, generator=gen).to(kind).to(device) for _, inp, _ in shapes
    }
    flops = sum(2.0 * batch * inp * out for _, inp, out in shapes)

    def one_pass() -> float:
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for (_, inp, _), w in zip(shapes, weights, strict=True):
                torch.nn.functional.linear(inputs[inp], w)
        _sync(device)
        return time.perf_counter() - t0

    one_pass()
    best = min(one_pass() for _ in range(repeats))
    return LinearLimit(batch=batch, step_s=best, flops=flops)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bench_limit(setup: BenchSetup) -> list[Row]:
    """(l) the linear layers alone at batch 32 (the limit), the engine's decode step against
    it, and where the step's time goes (``bench/serving_profile.py``)."""
    from bench.model_shapes import model_config
    from bench.serving_profile import profile_decode
    from bench.serving_setup import GOALS, Row

    limit = measure_linear_limit(
        model_config(setup.base.path),
        dtype=setup.dtype,
        device=setup.device,
        threads=setup.threads,
    )
    plain = profile_decode(setup, breakdown=False)
    parts = profile_decode(setup, breakdown=True)
    setup.extra["profile"] = {"limit": asdict(limit), "plain": plain, "breakdown": parts}
    rows = [
        Row("l_linear_limit", f"(l) linear layers alone, one decode step at batch {limit.batch} "
            "(the limit)", limit.tps, unit="tok/s",
            detail=f"{limit.step_s * 1000:.1f} ms a step, {limit.gflops:.0f} GFLOP/s"),
    ]  # fmt: skip
    if plain["steps"]:
        frac = limit.step_s * 1000 / plain["step_ms"]
        shares = ", ".join(f"{p} {v:.0%}" for p, v in parts.get("shares", {}).items())
        rows += [
            Row("l_engine_decode_vs_limit", f"(l) limit / PEFT engine decode step, batch "
                f"{limit.batch} over 8 adapters", frac, goal=f">= {GOALS['l']}",
                ok=frac >= GOALS["l"],
                detail=f"{limit.step_s * 1000:.1f} vs {plain['step_ms']:.1f} ms a step"),
            Row("l_profile", "(l) where a decode step goes (timers on)", parts.get("step_ms", 0.0),
                unit="ms", detail=shares),
        ]  # fmt: skip
    return rows


def of_limit(rows: list[Row]) -> None:
    """Each tokens/s row's fraction of the limit row (where one was measured)."""
    limit = next((r for r in rows if r.key == "l_linear_limit"), None)
    if limit is None:
        return
    for row in rows:
        if row.unit == "tok/s" and row is not limit:
            row.of_limit = round(row.value / limit.value, 4)
            row.detail = f"{row.detail}, " if row.detail else ""
            row.detail += f"{row.of_limit:.0%} of the limit"
