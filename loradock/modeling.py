"""Model-loading helpers shared by training, serving and evals (one home, no sideways imports)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def pick_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (``LORADOCK_DEVICE`` overrides)."""
    forced = os.environ.get("LORADOCK_DEVICE")
    if forced:
        return forced
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    """AVX-512 BF16 / AMX CPUs run bf16 matmuls fast; elsewhere bf16 on a CPU is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(device: str | None = None, requested: str | None = None):
    """The compute dtype: ``requested`` if given, bf16 where the hardware has it, else fp32."""
    import torch

    if requested and requested != "auto":
        if not hasattr(torch, requested):
            from loradock.errors import ConfigError

            raise ConfigError(
                "Invalid dtype",
                [f"dtype {requested!r} is not a torch dtype (use bfloat16, float16 or float32)"],
            )
        return getattr(torch, requested)
    device = device or pick_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        # Padding must not be a token the model should learn to emit; eos is the usual stand-in.
        tok.pad_token = tok.eos_token
    return tok


def load_base(
    path: str | Path,
    *,
    dtype: Any = None,
    device: str | None = None,
    quantization: str | None = None,
) -> tuple[Any, Any]:
    """Load a base model folder and its tokenizer; ``quantization="nf4"`` loads 4-bit (QLoRA)."""
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    if dtype is None or isinstance(dtype, str):
        dtype = pick_dtype(device, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            # The 4-bit layers dequantize to the job's dtype: bf16 where the hardware has it,
            # fp32 on a CPU without bf16 instructions, where bf16 matmuls are emulated and a
            # SmolLM2-135M training step measured ~7x slower than in fp32 (docs/training.md).
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device if device != "cpu" else "cpu"}
    elif quantization:
        from loradock.errors import ConfigError

        raise ConfigError(
            "Invalid quantization", [f"quantization {quantization!r} is not 'nf4' or none"]
        )
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if not quantization:
        model.to(device)
    return model, load_tokenizer(path)
