"""Attention for the batcher's padded batches: torch SDPA with grouped-query heads kept grouped.

With an attention mask, transformers' ``sdpa`` path repeats every key/value head for a
grouped-query (GQA) model (``repeat_kv``): a copy of the whole KV cache, in every layer, at
every step. The running batch is left-padded, so it always has a mask, and the copy cost as much
as the attention itself (32 rows x 81 tokens: 214 us against 120 us a layer). torch's SDPA
takes a mask and ``enable_gqa=True`` together, with the same result; this registers that as an
attention implementation (transformers' ``AttentionInterface``) and switches a loaded model to
it. Everything it does not cover (no mask, no GQA, position biases) goes to the stock function.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "loradock_sdpa"


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
    if (
        groups == 1
        or attention_mask is None
        or kwargs.get("position_bias") is not None
        or key.shape[-1] != value.shape[-1]
    ):
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
    uses another implementation (eager, flash) or has no grouped heads."""
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if config._attn_implementation != "sdpa" or not heads or heads == kv_heads:
        return False
    AttentionInterface.register(NAME, grouped_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as sdpa
    model.set_attn_implementation(NAME)
    return True
