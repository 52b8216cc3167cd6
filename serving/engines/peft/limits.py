"""The defaults of the PEFT engine's bounds on adapters (``PeftEngineConfig`` fields; plain
numbers, so the configuration imports them without torch).

- ``MAX_LORA_RANK`` (``--max-adapter-rank``): the largest rank (r) of any module of an
  adapter; higher is a 422 when the adapter is checked. Every slot of a layer's stacked
  weights is as wide as the widest adapter attached, so one huge rank would cost every slot
  its memory.
- ``MAX_CPU_ADAPTER_BYTES`` (``--max-cpu-adapter-bytes``): what the adapter cache's CPU tier
  holds, in tensor bytes, beside its count (``--max-cpu-adapters``): the least recently used
  adapters leave until both hold.

``capabilities(options)``: what both PEFT engine variants (in this process or a child) tell the
HTTP layer, from the same options.
"""

from __future__ import annotations

from typing import Any

from loradock.serving.engines.base import EngineCapabilities

MAX_LORA_RANK = 64
MAX_CPU_ADAPTER_BYTES = 4 * 2**30


def capabilities(options: Any) -> EngineCapabilities:
    """The PEFT engine's capabilities under ``options`` (a ``PeftEngineConfig``)."""
    return EngineCapabilities(
        name="peft",
        max_lora_rank=options.max_adapter_rank,
        max_loaded=options.max_loaded,
        max_model_len=options.max_model_len,
    )
