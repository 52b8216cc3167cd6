"""The engine's attention and KV cache change speed, never results: a left-padded batch
decoded step by step gives the stock transformers logits (sdpa + DynamicCache)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from loradock.modeling import load_base
from loradock.serving.engines.peft.attention import (
    NAME,
    cpu_grouped_attention,
    use_grouped_attention,
)
from loradock.serving.engines.peft.kv_cache import GROW_TOKENS, SlabCache
from loradock.tiny import make_tiny_base


@pytest.fixture(scope="module")
def gqa_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("gqa")
    return make_tiny_base(root / "base", hidden_size=64, num_heads=4, num_kv_heads=2)


def _decode(model, cache, steps: int) -> list[torch.Tensor]:
    """Prefill a left-padded batch of 3, then greedy-decode ``steps`` tokens; every step's
    logits. Rows leave and join like the runner's: row 1 is dropped after the second step."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :7] = 0
    out = []
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        result = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True)  # fmt: skip
        for step in range(steps):
            logits = result.logits[:, -1]
            out.append(logits)
            nxt = logits.argmax(-1, keepdim=True)
            positions = positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            if step == 1:  # a finished row leaves: the runner indexes every layer's cache
                keep = torch.tensor([0, 2])
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[keep], layer.values[keep]
                nxt, positions, mask = nxt[keep], positions[keep], mask[keep]
            result = model(input_ids=nxt, attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=True)  # fmt: skip
    return out


def test_grouped_attention_and_slab_cache_match_stock(gqa_base):
    stock, _ = load_base(gqa_base, dtype="float32", device="cpu")
    ours, _ = load_base(gqa_base, dtype="float32", device="cpu")
    assert use_grouped_attention(ours) and ours.config._attn_implementation == NAME
    steps = GROW_TOKENS + 5  # past the first buffer: the slab grows once on the way
    expected = _decode(stock.eval(), DynamicCache(), steps)
    got = _decode(ours.eval(), SlabCache(), steps)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bf16_cpu_attention_tracks_float32(gqa_base):
    """bf16 on a CPU runs the float32-maths path: its greedy decode stays within bf16's
    rounding of the float32 model's logits, step after step, rows leaving on the way."""
    stock, _ = load_base(gqa_base, dtype="float32", device="cpu")
    ours, _ = load_base(gqa_base, dtype="bfloat16", device="cpu")
    assert use_grouped_attention(ours)
    expected = _decode(stock.eval(), DynamicCache(), 6)
    got = _decode(ours.eval(), SlabCache(), 6)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b.float(), a, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "length", "total", "mask_kind", "dtype"),
    [
        (4, 2, 1, 12, "bool", torch.float32),  # a decode step, grouped heads
        (4, 2, 1, 12, "bool", torch.bfloat16),
        (4, 4, 1, 12, "bool", torch.bfloat16),  # no groups
        (4, 2, 6, 6, "bool", torch.bfloat16),  # a left-padded prefill
        (4, 2, 6, 6, "none", torch.bfloat16),  # no padding: transformers passes no mask
        (4, 2, 5, 9, "none", torch.float32),  # a prefill after cached tokens (causal offset)
        (6, 2, 3, 7, "float", torch.float16),  # an additive float mask
    ],
)
def test_cpu_grouped_attention_matches_sdpa(heads, kv_heads, length, total, mask_kind, dtype):
    gen = torch.Generator().manual_seed(0)
    batch, dim = 3, 16
    q = torch.randn(batch, heads, length, dim, generator=gen)
    k = torch.randn(batch, kv_heads, total, dim, generator=gen)
    v = torch.randn(batch, kv_heads, total, dim, generator=gen)
    causal = torch.ones(length, total, dtype=torch.bool).tril(total - length)
    allowed = causal.expand(batch, 1, length, total).clone()
    allowed[1, :, :, :2] = False  # row 1 is left-padded by two tokens
    if mask_kind == "none":
        allowed = causal.expand(batch, 1, length, total)
    groups = heads // kv_heads
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), attn_mask=allowed
    ).transpose(1, 2)
    mask = {
        "bool": allowed,
        "none": None,
        "float": torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf")),
    }[mask_kind]
    got = cpu_grouped_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, dim**-0.5)
    assert got.dtype == dtype and got.shape == (batch, length, heads, dim)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.isfinite(got).all()  # never NaN, not even where a row attends to nothing
    if mask_kind == "bool" and length > 1:  # padding positions of row 1 attend to nothing:
        got, want = got[:, 2:], want[:, 2:]  # any finite value will do there
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "implementation", "dtype", "switched"),
    [
        (4, 2, "sdpa", "float32", True),
        (4, 4, "sdpa", "float32", False),
        (4, 4, "sdpa", "bfloat16", True),  # bf16 on a CPU: the float32-maths path
        (4, 2, "eager", "float32", False),
    ],
    ids=["gqa-sdpa", "no-groups", "bf16-cpu", "eager-kept"],
)
def test_switch_only_grouped_sdpa_models(
    tmp_path, heads, kv_heads, implementation, dtype, switched
):
    base = make_tiny_base(tmp_path / "b", hidden_size=64, num_heads=heads, num_kv_heads=kv_heads)
    model, _ = load_base(base, dtype=dtype, device="cpu")
    model.set_attn_implementation(implementation)
    assert use_grouped_attention(model) is switched
    assert model.config._attn_implementation == (NAME if switched else implementation)
