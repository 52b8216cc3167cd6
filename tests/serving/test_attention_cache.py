"""The engine's attention and KV cache change speed, never results: a left-padded batch
decoded step by step gives the stock transformers logits (sdpa + DynamicCache)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from loradock.modeling import load_base
from loradock.serving.attention import NAME, use_grouped_attention
from loradock.serving.kv_cache import GROW_TOKENS, SlabCache
from loradock.tiny import make_tiny_base


@pytest.fixture(scope="module")
def gqa_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("gqa")
    return make_tiny_base(root / "base", hidden_size=64, num_heads=4, num_kv_heads=2)


def _decode(model, cache, steps: int) -> list[torch.Tensor]:
    """Prefill a left-padded batch of 3, then greedy-decode ``steps`` tokens; every step's
    logits. Rows leave and join like the batcher's: row 1 is dropped after the second step."""
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
            if step == 1:  # a finished row leaves: the batcher indexes every layer's cache
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


@pytest.mark.parametrize(
    ("heads", "kv_heads", "implementation", "switched"),
    [(4, 2, "sdpa", True), (4, 4, "sdpa", False), (4, 2, "eager", False)],
    ids=["gqa-sdpa", "no-groups", "eager-kept"],
)
def test_switch_only_grouped_sdpa_models(tmp_path, heads, kv_heads, implementation, switched):
    base = make_tiny_base(tmp_path / "b", hidden_size=64, num_heads=heads, num_kv_heads=kv_heads)
    model, _ = load_base(base, dtype="float32", device="cpu")
    model.set_attn_implementation(implementation)
    assert use_grouped_attention(model) is switched
    assert model.config._attn_implementation == (NAME if switched else implementation)
