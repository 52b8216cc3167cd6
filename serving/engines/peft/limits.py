"""The defaults of the PEFT engine's bounds on adapters (``PeftEngineConfig`` fields; plain
numbers, so the configuration imports them without torch).

- ``MAX_LORA_RANK`` (``--max-adapter-rank``): the largest rank (r) of any module of an
  adapter; higher is a 422 when the adapter is checked. Every slot of a layer's stacked
  weights is as wide as the widest adapter attached, so one huge rank would cost every slot
  its memory.
- ``MAX_CPU_ADAPTER_BYTES`` (``--max-cpu-adapter-bytes``): what the adapter cache's CPU tier
  holds, in tensor bytes, beside its count (``--max-cpu-adapters``): the least recently used
  adapters leave until both hold.
"""

MAX_LORA_RANK = 64
MAX_CPU_ADAPTER_BYTES = 4 * 2**30
