"""The vLLM engine's own options (``ServerConfig.vllm``): what is passed through to vLLM.

The sizes both engines share (``max_model_len``, ``dtype``, ``max_batch_size`` as vLLM's
``max_num_seqs``, ``max_queue``, ``max_loaded``, ``max_cpu_adapters``) are given once, in
``ServerConfig.peft``. Nothing here imports vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loradock.serving.config_fields import int_problems, option, refuse


@dataclass(frozen=True)
class VllmConfig:
    """Options only the vLLM engine has; ``None``: derived from the registry, or vLLM's default."""

    max_lora_rank: int | None = option(None, "vLLM: largest adapter rank (default: registry's)")
    max_loras: int | None = option(None, "vLLM: adapters in one batch (default: --max-loaded)")
    max_cpu_loras: int | None = option(
        None, "vLLM: adapters kept loaded (default: from --max-cpu-adapters)"
    )
    tensor_parallel_size: int | None = option(None, "vLLM: GPUs to split the model over")
    gpu_memory_utilization: float | None = option(
        None, "vLLM: share of GPU (CPU build: host) memory to use, in (0, 1]"
    )
    kv_cache_memory_bytes: int | None = option(
        None, "vLLM: a fixed KV cache size in bytes (default on the CPU: 256 MiB)"
    )
    enforce_eager: bool | None = None  # None: eager on the CPU (compiling costs minutes)
    # None: on the CPU, base requests go through a zero adapter (see engines/vllm/null_adapter.py)
    null_adapter_for_base: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        refuse(self.problems(vars(self)))

    @staticmethod
    def problems(v: Mapping[str, Any]) -> list[str]:
        # Imported here: limits reads safetensors headers (the registry), which the CLI's
        # start-up does not need.
        from loradock.serving.engines.vllm.limits import VLLM_LORA_RANKS

        names = ("max_loras", "max_cpu_loras", "tensor_parallel_size", "kv_cache_memory_bytes")
        problems = int_problems(v, dict.fromkeys(names, 1), optional=names)
        problems += int_problems(v, {"seed": 0})
        rank = v["max_lora_rank"]
        if rank is not None and (isinstance(rank, bool) or rank not in VLLM_LORA_RANKS):
            problems.append(
                f"max_lora_rank={rank!r} must be one of {', '.join(map(str, VLLM_LORA_RANKS))} "
                "(the ranks vLLM accepts; smaller adapters are padded)"
            )
        loras, cpu = v["max_loras"], v["max_cpu_loras"]
        if isinstance(loras, int) and isinstance(cpu, int) and 1 <= cpu < loras:
            problems.append(f"max_cpu_loras={cpu!r} must be >= max_loras ({loras!r})")
        gmu = v["gpu_memory_utilization"]
        if gmu is not None and (
            isinstance(gmu, bool) or not isinstance(gmu, int | float) or not 0 < gmu <= 1
        ):
            problems.append(
                f"gpu_memory_utilization={gmu!r} must be a number in (0, 1], e.g. 0.9 "
                "(the share of the GPU's memory vLLM may use)"
            )
        return problems
