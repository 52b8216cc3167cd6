"""trl's fused LM head with tiles sized for a CPU.

trl's ``SFTTrainer`` computes the loss through a fused LM head (``trl.kernels
.ChunkedLogProbFunction``): hidden states times the output embedding, tile by tile, folded into
log-probabilities without ever holding the full ``tokens x vocabulary`` logits. Its tiles are
sized for a GPU: 4096 tokens x 32768 vocabulary entries. On a CPU (no Triton) each tile is
folded by PyTorch ops, and every one of them (exp, subtract, compare, the fp32 copies) reads and
writes a fresh fp32 temporary of the tile's size, 512 MB each. Those run at memory speed at best,
and the allocations are fresh pages every time. Tiles of 256 x 4096 (4 MB) stay in cache.

Measured on SmolLM2-135M's head (49152 x 576, CPU, 1 thread, bf16 autocast, forward +
backward of the log-probabilities with trl's entropy and top-1 outputs): 2.9 ms a token with
trl's tiles, 1.2 ms with these (tiles of 64-512 tokens x 2048-16384 entries: 1.2-2.6 ms; past
~2M elements a tile it turns slow). In a training step the gap was wider, and grew with the
tokens per call: 3.85 ms a token on one packed row of ~3840 tokens, 2.12 ms on padded batches
of ~1660, 1.15-1.18 ms on both with these tiles (docs/training.md, Packing). The arithmetic is
the same, only the order of the online log-sum-exp steps changes. On a GPU trl's Triton
kernels run and nothing changes.

The tile sizes are module globals of trl (``TOKEN_CHUNK_SIZE`` in ``trl.kernels
.chunked_logprob``, read on every call; ``_CHUNKED_LOGPROB_CHUNK_SIZE`` in
``trl.trainer.utils``, passed on every call), so :func:`cpu_lm_head_tiles` sets them for the
length of a training run and puts trl's values back after it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

CPU_TOKEN_TILE = 256
CPU_VOCAB_TILE = 4096
# (module, global): trl's tile sizes, tokens then vocabulary entries.
_TILE_GLOBALS = (
    ("trl.kernels.chunked_logprob", "TOKEN_CHUNK_SIZE"),
    ("trl.trainer.utils", "_CHUNKED_LOGPROB_CHUNK_SIZE"),
)


@contextlib.contextmanager
def cpu_lm_head_tiles(
    device: str, *, tokens: int = CPU_TOKEN_TILE, vocab: int = CPU_VOCAB_TILE
) -> Iterator[bool]:
    """Within the block, trl's fused LM head uses ``tokens x vocab`` tiles when ``device`` is a
    CPU; yields whether it does (False on other devices, or a trl without these globals)."""
    if device != "cpu":
        yield False
        return
    modules = []
    for module_name, name in _TILE_GLOBALS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
        if module is None or not isinstance(getattr(module, name, None), int):
            log.warning("trl has no %s.%s: its LM head keeps its own tiles", module_name, name)
            yield False
            return
        modules.append((module, name))
    saved = [getattr(module, name) for module, name in modules]
    for (module, name), size in zip(modules, (tokens, vocab), strict=True):
        setattr(module, name, size)
    try:
        yield True
    finally:
        for (module, name), size in zip(modules, saved, strict=True):
            setattr(module, name, size)
