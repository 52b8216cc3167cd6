"""Options of the vLLM engine: what is passed through to vLLM, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loradock.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
# On the CPU build the KV cache is host memory; a fixed size keeps a shared machine usable
# (vLLM's default, a share of the NUMA node's memory, starves everyone else).
CPU_KV_CACHE_BYTES = 256 * 2**20
NULL_LORA_ID = 2**30  # far above the ids handed out per sha


@dataclass(frozen=True)
class VllmOptions:
    """Engine options passed through to vLLM; ``None`` means derived or vLLM's default."""

    max_model_len: int = 512
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # CPU build: share of host memory reserved
    kv_cache_memory_bytes: int | None = None  # a fixed KV cache size (wins over the share)
    max_lora_rank: int | None = None
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    max_num_seqs: int | None = None  # sequences vLLM runs at once
    max_queue: int | None = None  # requests waiting beyond those; more get QueueFullError
    enforce_eager: bool | None = None  # None: eager on the CPU (compiling costs minutes)
    # None: on the CPU, base requests go through a zero adapter (see vllm_null_adapter.py)
    null_adapter_for_base: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        for name, low in (
            ("max_model_len", 8),
            ("tensor_parallel_size", 1),
            ("max_loras", 1),
            ("max_cpu_loras", 1),
            ("max_num_seqs", 1),
            ("max_queue", 0),
            ("kv_cache_memory_bytes", 1),
        ):
            value = getattr(self, name)
            if value is None and name not in ("max_model_len", "tensor_parallel_size"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{name}={value!r} must be an integer >= {low}")
        gmu = self.gpu_memory_utilization
        if gmu is not None and (not isinstance(gmu, int | float) or not 0 < gmu <= 1):
            problems.append(f"gpu_memory_utilization={gmu!r} must be a number in (0, 1]")
        if problems:
            raise ConfigError("Invalid vLLM engine options", problems)

    @classmethod
    def from_server_config(cls, config: Any) -> VllmOptions:
        """From a ``ServerConfig``; vLLM-only attributes are read when the config has them."""
        opt = lambda name, default=None: getattr(config, name, default)  # noqa: E731
        return cls(
            max_model_len=opt("max_model_len", 512),
            dtype=opt("dtype", "auto"),
            tensor_parallel_size=opt("tensor_parallel_size") or 1,
            gpu_memory_utilization=opt("gpu_memory_utilization"),
            kv_cache_memory_bytes=opt("kv_cache_memory_bytes"),
            max_lora_rank=opt("max_lora_rank"),
            max_loras=opt("max_loras"),
            max_cpu_loras=opt("max_cpu_loras"),
            max_num_seqs=opt("max_batch_size"),
            max_queue=opt("max_queue"),
        )
