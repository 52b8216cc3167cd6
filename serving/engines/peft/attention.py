"""Attention for the runner's padded batches: grouped-query heads kept grouped, and a float32
path for bf16/fp16 models on a CPU.

With an attention mask, transformers' ``sdpa`` path repeats every key/value head for a
grouped-query (GQA) model (``repeat_kv``): a copy of the whole KV cache, in every layer, at
every step. The running batch is left-padded, so it always has a mask, and the copy cost as much
as the attention itself (32 rows x 81 tokens: 214 us against 120 us a layer). torch's SDPA
takes a mask and ``enable_gqa=True`` together, with the same result.

On a CPU, torch's SDPA in bfloat16 is slow with a mask (it leaves the fused kernel): one decode
step of 32 rows over 69 tokens took 677 us a layer in bf16 against 107 us in float32. The
``cpu_grouped_attention`` path computes in float32 with two grouped matmuls (144 us in the same
case, the casts included), which is also what keeps a bf16 model's softmax accurate.

This registers both as one attention implementation (transformers' ``AttentionInterface``) and
switches a loaded model to it. Everything it does not cover (position biases, differing key and
value head sizes) goes to the stock function.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "loradock_sdpa"
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def cpu_grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Attention in float32 for CPU tensors of any float dtype, GQA heads kept grouped.

    ``query`` [B, H, L, D], ``key``/``value`` [B, KV, T, D], ``mask`` boolean [B, 1, L, T]
    (True = attend; None = causal) -> [B, L, H, D] in the query's dtype. Masked scores get
    float32's lowest finite value, not -inf: a row masked everywhere (a left-padding position)
    then gives finite values that nobody reads, never NaN.
    """
    batch, heads, length, dim = query.shape
    kv_heads, total = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # Query heads h = kv * groups + g: each KV head's group of queries is one matrix.
    q = query.float().reshape(batch, kv_heads, groups * length, dim)
    scores = torch.matmul(q, key.float().transpose(-1, -2)).view(
        batch, kv_heads, groups, length, total
    )
    scores.mul_(scale)
    if mask is None:
        mask = torch.ones(1, 1, length, total, dtype=torch.bool, device=query.device).tril(
            total - length
        )
    elif mask.dtype != torch.bool:  # an additive float mask: 0 where allowed
        mask = mask == 0
    keep = mask.reshape(mask.shape[0], 1, 1, length, total)
    scores.masked_fill_(~keep, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).view(batch, kv_heads, groups * length, total)
    out = torch.matmul(probs, value.float()).view(batch, heads, length, dim)
    return out.to(query.dtype).transpose(1, 2).contiguous()


def grouped_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    groups = getattr(module, "num_key_value_groups", 1)
    if kwargs.get("position_bias") is not None or key.shape[-1] != value.shape[-1]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    if query.device.type == "cpu" and query.dtype in _LOW_PRECISION and dropout == 0.0:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return cpu_grouped_attention(query, key, value, attention_mask, scale), None
    if groups == 1 or attention_mask is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    # The mask already holds causality and padding (transformers' sdpa_mask built it).
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model: Any) -> bool:
    """Switch ``model`` from ``sdpa`` to :func:`grouped_sdpa_forward`; False (unchanged) when it
    uses another implementation (eager, flash), or when neither path applies (no grouped heads,
    and not a bf16/fp16 model on a CPU)."""
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    weight = next(model.parameters(), None)
    cpu_low = weight is not None and weight.device.type == "cpu" and weight.dtype in _LOW_PRECISION
    if config._attn_implementation != "sdpa" or not heads or (heads == kv_heads and not cpu_low):
        return False
    AttentionInterface.register(NAME, grouped_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as sdpa
    model.set_attn_implementation(NAME)
    return True
