"""Attention for training: per packed example on padding-free rows, eager on a CPU otherwise.

trl's bfd packing is padding-free: a batch becomes ONE row of several examples, with
``position_ids`` restarting at 0 per example and ``cu_seq_lens_q`` marking the boundaries.
transformers' ``sdpa`` turns that into a block-diagonal mask over the whole row, so PyTorch's
kernel computes attention over all ``L x L`` pairs (quadratic in the ~1000-token packed row, not
in each ~100-token example) and throws most of it away. That is why packed training ran at
0.69-0.87x the per-token speed of unpacked training on a CPU (docs/training.md). The varlen
kernels that skip the masked blocks (``flash_attention_2``) exist only on GPUs.

:data:`PACKED` is one more transformers attention implementation (registered through the
documented ``AttentionInterface``/``AttentionMaskInterface`` extension points) that attends
within each example's slice of the packed row only, so the work is ``sum(l_i^2)``. Every other
call (padded batches, generation with a cache) goes to transformers' sdpa unchanged.

Kernel choice, measured on SmolLM2-135M (CPU, 1 thread, bf16 autocast, forward + backward):
PyTorch's CPU flash-attention backward is slow on short rows, so on a CPU plain matmul-softmax
attention is faster, both per packed example (29 -> 11 ms a layer for ten 103-token examples)
and for unpacked padded batches (``eager``: 275 -> 355 tokens/s on 4 x 104). On other devices
the per-example slices go through sdpa (flash kernels there).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

log = logging.getLogger(__name__)

PACKED = "loradock_packed"


def _example_attention(query: Any, key: Any, value: Any, scaling: float, dropout: float) -> Any:
    """Causal attention of one example, matmul-softmax, grouped query heads without copies."""
    import torch

    _, heads, n, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(1, kv_heads, heads // kv_heads, n, dim)
    k, v = key.unsqueeze(2), value.unsqueeze(2)
    scores = (q @ k.transpose(-1, -2)) * scaling
    future = torch.ones(n, n, dtype=torch.bool, device=query.device).triu(1)
    scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
    # Softmax in fp32 and back, as transformers' eager attention does under autocast.
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    if dropout:
        weights = torch.nn.functional.dropout(weights, p=dropout, training=True)
    return (weights @ v).reshape(1, heads, n, dim)


def packed_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention signature: ``query`` is (batch, heads, seq, head_dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    boundaries = kwargs.get("cu_seq_lens_q")
    packed = (
        boundaries is not None
        and query.shape[0] == 1
        and key.shape[2] == query.shape[2]  # no cache: training or a plain forward
        and getattr(module, "is_causal", True)
    )
    if not packed:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    edges = boundaries.tolist() if hasattr(boundaries, "tolist") else list(boundaries)
    # Cut the row with split, not slicing: the backward of each slice allocates a zero gradient
    # the size of the whole row, so slicing costs (examples x row length) per layer.
    sizes = [edges[0], *(end - start for start, end in itertools.pairwise(edges))]
    sizes.append(query.shape[2] - edges[-1])  # past the last boundary: none from trl's collator
    pieces = zip(
        query.split(sizes, dim=2), key.split(sizes, dim=2), value.split(sizes, dim=2), strict=True
    )
    on_cpu = query.device.type == "cpu"
    parts = []
    for i, (q, k, v) in enumerate(pieces):
        if q.shape[2] == 0:
            continue
        if i == 0 or i == len(sizes) - 1:  # outside every example: carries no loss
            parts.append(q.new_zeros(1, q.shape[1], q.shape[2], v.shape[-1]))
        elif on_cpu:
            parts.append(_example_attention(q, k, v, scaling, dropout))
        else:
            parts.append(
                torch.nn.functional.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    is_causal=True,
                    dropout_p=dropout,
                    scale=scaling,
                    enable_gqa=q.shape[1] != k.shape[1],
                )  # fmt: skip
            )
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make :data:`PACKED` a known attention implementation (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED, packed_attention)
    # Same masks as sdpa, for the calls handed back to sdpa (padded batches, generation).
    AttentionMaskInterface.register(PACKED, sdpa_mask)
    return PACKED


def training_attention(*, packed: bool, device: str) -> str:
    """The attention implementation to train with (see the module docstring for why)."""
    if packed:
        return PACKED
    return "eager" if device == "cpu" else "sdpa"


def use_training_attention(model: Any, *, packed: bool, device: str) -> str | None:
    """Switch a model that runs sdpa to :func:`training_attention`; other implementations
    (flash attention, which handles packed rows itself, or one the user chose) are left alone.
    Returns the implementation to restore after training, or None when nothing changed."""
    current = getattr(model.config, "_attn_implementation", None)
    wanted = training_attention(packed=packed, device=device)
    if current != "sdpa" or wanted == current:
        return None
    if wanted == PACKED:
        register()
    model.set_attn_implementation(wanted)
    log.info("attention for training: %s (was %s)", wanted, current)
    return current


def restore_attention(model: Any, previous: str | None) -> None:
    """Back to the implementation the model had (generation and evaluation use it)."""
    if previous is not None:
        model.set_attn_implementation(previous)
