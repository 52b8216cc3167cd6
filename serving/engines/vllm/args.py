"""What a ``VllmEngine`` hands to vLLM: the engine arguments it starts with (from its options
and LoRA limits); each request's sampling parameters are ``sampling.py``'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loradock.serving.config import PeftEngineConfig
from loradock.serving.engines.vllm.limits import LoraLimits
from loradock.serving.engines.vllm.options import VllmConfig

# On the CPU build the KV cache is host memory; a fixed size keeps a shared machine usable
# (vLLM's default, a share of the NUMA node's memory, starves everyone else).
CPU_KV_CACHE_BYTES = 256 * 2**20


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_engine_args(
    model_path: Path,
    *,
    served_name: str,
    sizes: PeftEngineConfig,
    options: VllmConfig,
    limits: LoraLimits | None,
    null_adapter: bool,
) -> Any:
    """vLLM's engine arguments; ``limits`` None starts it without LoRA (a merged model)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    cuda = has_cuda()
    kwargs: dict[str, Any] = {
        "model": str(model_path),
        "tokenizer": str(model_path),
        "served_model_name": served_name,
        "max_model_len": sizes.max_model_len,
        "dtype": sizes.dtype,
        "max_num_seqs": sizes.max_batch_size,
        "enforce_eager": (not cuda) if options.enforce_eager is None else options.enforce_eager,
        "seed": options.seed,
        "disable_log_stats": True,
        # Compact JSON for output constraints, as the PEFT engine writes it (vLLM reads this
        # engine-wide, not per request, and only for a named backend): no free whitespace
        # for a model to pad with. xgrammar: vLLM's default, and the PEFT engine's.
        "structured_outputs_config": StructuredOutputsConfig(
            backend="xgrammar", disable_any_whitespace=True
        ),
    }
    passed = ("tensor_parallel_size", "gpu_memory_utilization", "kv_cache_memory_bytes")
    kwargs.update({k: getattr(options, k) for k in passed if getattr(options, k) is not None})
    unsized = options.kv_cache_memory_bytes is None and options.gpu_memory_utilization is None
    if unsized and not cuda:
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if limits is not None:
        extra = 1 if null_adapter else 0  # the null adapter's own slot
        loras = limits.max_loras + extra
        kwargs.update(
            enable_lora=True,
            max_lora_rank=limits.max_lora_rank,
            max_loras=loras,
            # The engine bounds what is loaded itself (residency.py); vLLM's cache gets a
            # batch of slack so its own LRU never evicts an adapter of the running batch
            # (its worker then dies with a KeyError in convert_mapping: measured).
            max_cpu_loras=limits.max_cpu_loras + extra + loras,
        )
    return AsyncEngineArgs(**kwargs)
