"""Merge published adapters and publish the result: merged full weights or a new adapter.

``merge(config)`` resolves the sources and checks them together (one base, ranks the method
can combine) before any weights load. One source is merged as it is; several are first
combined into one adapter (``merge_sources.combine_adapters``). With ``into="merge"`` the
adapter is merged into a float32 copy of the base, written in the base's dtype (or
``config.dtype``) and checked against the unmerged adapter (``merge_check``): if the merged
model does not answer as the adapter does, nothing is published. The card records every
source's ``repo@sha``, the method, weights and density, and the check's figures.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from loradock.errors import ArtifactError, ConfigError
from loradock.training.merge_card import merge_card
from loradock.training.merge_check import MergeCheck, compare_models, probe_prompts
from loradock.training.merge_config import MergeConfig
from loradock.training.merge_sources import base_of, combine_adapters, source_problems


def stored_dtype(base_path: Path) -> str:
    """The dtype a model folder's weights are stored in (its config.json says)."""
    raw = json.loads((Path(base_path) / "config.json").read_text())
    if raw.get("quantization_config"):
        raise ArtifactError(
            f"Base model {str(base_path)!r} is quantized; merge needs a full-precision base."
        )
    return str(raw.get("dtype") or raw.get("torch_dtype") or "float32")


def check_compute_dtype(out_dtype: str) -> str:
    """The dtype the merge check computes in: the output dtype where this machine has it,
    else float32, as a server here runs such weights (``--dtype auto``). A CPU without bf16
    instructions emulates 16-bit matmuls about 14x slower than float32 (docs/training.md)
    and would serve the weights upcast; the 16-bit rounding of the weights, which is what
    the merge changes, is checked either way."""
    from loradock.modeling import cpu_supports_bf16

    if out_dtype == "bfloat16" and cpu_supports_bf16():
        return out_dtype
    return "float32"


def merge_folder(
    adapter_path: Path,
    base_path: Path,
    out: Path,
    *,
    dtype: str = "auto",
    tasks: tuple[str | None, ...] = (),
    probe_rows: int = 16,
    max_new_tokens: int = 32,
) -> MergeCheck:
    """Merge ``adapter_path`` into the base in float32, write it to ``out`` in ``dtype``
    (``auto``: the base's), after checking it answers as the unmerged adapter does."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loradock.modeling import load_tokenizer

    out_dtype = stored_dtype(base_path) if dtype == "auto" else dtype
    compute = check_compute_dtype(out_dtype)
    # Merging in the base's 16-bit dtype rounds B @ A before adding it, then rounds again:
    # in float32 only the final sum is rounded, once, into the output dtype.
    base32 = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base32, str(adapter_path)).merge_and_unload()
    merged = merged.to(getattr(torch, out_dtype))
    # The reference is the adapter as served unmerged: the base in the output dtype + LoRA.
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=getattr(torch, out_dtype))
    base = base.to(getattr(torch, compute))
    reference = PeftModel.from_pretrained(base, str(adapter_path)).eval()
    # Both hold the output dtype's values; they compute as a server here would run them.
    checked = merged.to(getattr(torch, compute)).eval()
    tokenizer = load_tokenizer(base_path)
    prompts, probe = probe_prompts(tasks, probe_rows)
    check = compare_models(
        reference,
        checked,
        tokenizer,
        prompts,
        dtype=out_dtype,
        compute_dtype=compute,
        probe=probe,
        max_new_tokens=max_new_tokens,
    )
    if not check.ok:
        raise ArtifactError(
            f"The merged model does not answer as the unmerged adapter does: {check.summary()}; "
            "nothing was published."
        )
    merged = checked.to(getattr(torch, out_dtype))  # upcast and back: the same values
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return check


def merge(config: MergeConfig, *, registry: Any = None):
    """Resolve, check, combine/merge and publish as ``config.target_repo``; returns the
    registry's ``PublishedAdapter`` (``kind`` "merge", or "adapter" for ``into="adapter"``)."""
    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    adapters = [registry.resolve(name) for name in config.sources]
    problems = source_problems(config, adapters)
    if problems:
        raise ConfigError("These adapters cannot be merged", problems)
    # The sources name one base (checked); a source that pins its revision pins it for all.
    base = registry.resolve_base(max((base_of(a) for a in adapters), key=lambda b: "@" in b))
    tasks = tuple(a.card.task if a.card else None for a in adapters)
    with tempfile.TemporaryDirectory(prefix="loradock-merge-") as tmp:
        adapter_path = adapters[0].path
        if config.several:
            adapter_path = combine_adapters(
                base.path, [a.path for a in adapters], config, Path(tmp) / "combined"
            )
        if config.into == "adapter":
            card = merge_card(config, adapters, base, check=None)
            return registry.publish(
                adapter_path,
                config.target_repo,
                card=card,
                commit_message=_message(config, adapters),
            )
        out = Path(tmp) / "merged"
        check = merge_folder(
            adapter_path,
            base.path,
            out,
            dtype=config.dtype,
            tasks=tasks,
            probe_rows=config.probe_rows,
            max_new_tokens=config.max_new_tokens,
        )
        card = merge_card(config, adapters, base, check=check)
        return registry.publish_base(
            out, config.target_repo, card=card, commit_message=_message(config, adapters)
        )


def _message(config: MergeConfig, adapters) -> str:
    names = ", ".join(f"{a.repo_id}@{a.sha[:12]}" for a in adapters)
    if not config.several:
        return f"Merge {names} into its base"
    into = "an adapter" if config.into == "adapter" else "the base"
    return f"Combine {names} ({config.method}) into {into}"
