"""Merge a published adapter into a full-precision copy of its base and publish the result.

The merged weights are checked against the unmerged adapter on a fixed probe batch before
anything is published: if their logits disagree beyond the dtype's tolerance, nothing is.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import ArtifactError

# Max |merged - unmerged| logit allowed per dtype: merging rounds W + BA once into the
# dtype, so a 16-bit model differs by a few ulps of its largest logits (measured on
# SmolLM2-135M: see docs/training.md).
LOGIT_TOLERANCE = {"float32": 1e-3, "float16": 0.1, "bfloat16": 0.5}
PROBE_PROMPTS = (
    "Rewrite the date below in ISO format (YYYY-MM-DD).\nDate: 3rd of March 2024",
    "Extract the person's name, the city and the year.\nRecord: In 2001, Uma Bauer moved to Madrid.",
    "What is the capital of France?",
)


@dataclass(frozen=True)
class MergeCheck:
    """How far the merged model's logits are from the unmerged adapter's on the probe batch."""

    dtype: str
    max_abs_diff: float
    tolerance: float
    argmax_agreement: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def probe_batch(tokenizer) -> dict[str, Any]:
    """The probe prompts through the chat template, right-padded, as tensors."""
    import torch

    rows = []
    for prompt in PROBE_PROMPTS:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        rows.append(list(enc["input_ids"] if hasattr(enc, "keys") else enc))
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
    }


def _logits(model, batch) -> Any:
    import torch

    with torch.no_grad():
        out = model(**{k: v.to(next(model.parameters()).device) for k, v in batch.items()})
    mask = batch["attention_mask"].bool()
    return out.logits.float().cpu()[mask]


def merge_folder(adapter_path: Path, base_path: Path, out: Path) -> MergeCheck:
    """Merge ``adapter_path`` into the base (its stored dtype, never quantized) into ``out``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loradock.modeling import load_tokenizer

    raw = json.loads((base_path / "config.json").read_text())
    if raw.get("quantization_config"):
        raise ArtifactError(
            f"Base model {str(base_path)!r} is quantized; merge needs a full-precision base."
        )
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype="auto")
    dtype = str(base.dtype).removeprefix("torch.")
    tokenizer = load_tokenizer(base_path)
    batch = probe_batch(tokenizer)
    model = PeftModel.from_pretrained(base, str(adapter_path))
    model.eval()
    unmerged = _logits(model, batch)
    merged_model = model.merge_and_unload()
    merged = _logits(merged_model, batch)
    check = MergeCheck(
        dtype=dtype,
        max_abs_diff=float((merged - unmerged).abs().max()),
        tolerance=LOGIT_TOLERANCE.get(dtype, 1e-3),
        argmax_agreement=float((merged.argmax(-1) == unmerged.argmax(-1)).float().mean()),
    )
    if not check.ok:
        raise ArtifactError(
            f"Merged logits differ from the unmerged adapter's by {check.max_abs_diff:.4g} "
            f"(tolerance for {dtype}: {check.tolerance}); nothing was published."
        )
    merged_model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return check


def merge_adapter(name: str, *, repo_id: str | None = None, registry: Any = None):
    """Resolve ``org/name[@rev]``, merge it into its base, check, publish as ``repo_id``.

    ``repo_id`` defaults to ``<adapter repo>-merged``. Returns the registry's
    ``PublishedAdapter`` (``kind == "merge"``); the card says ``base_model_relation: merge``.
    """
    from loradock.registry.card import build_adapter_card

    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    adapter = registry.resolve(name)
    card = adapter.card
    base_name = adapter.artifact.base_model if card is None else card.base_model
    if not base_name:
        raise ArtifactError(f"Adapter {name!r} does not name its base model; cannot merge.")
    base_rev = card.base_revision if card is not None else None
    base = registry.resolve_base(f"{base_name}@{base_rev}" if base_rev else base_name)
    target = repo_id or f"{adapter.repo_id}-merged"
    with tempfile.TemporaryDirectory(prefix="loradock-merge-") as tmp:
        out = Path(tmp) / "merged"
        check = merge_folder(adapter.path, base.path, out)
        merged_card = build_adapter_card(
            base_model=base.repo_id or base_name,
            base_revision=base.sha or base_rev,
            task=card.task if card else None,
            datasets=card.datasets if card else (),
            tags=["loradock", "merged", "vllm"],
            eval_results=card.eval_results if card else (),
            training={
                "merged_from": {"repo_id": adapter.repo_id, "revision": adapter.sha},
                "merge_check": {
                    "dtype": check.dtype,
                    "max_abs_logit_diff": check.max_abs_diff,
                    "tolerance": check.tolerance,
                    "argmax_agreement": check.argmax_agreement,
                },
                "adapter_training": dict(card.training) if card else {},
            },
            body=_merge_body(target, adapter.repo_id, adapter.sha, base_name, check),
            relation="merge",
        )
        return registry.publish_base(
            out,
            target,
            card=merged_card,
            commit_message=f"Merge {adapter.repo_id}@{adapter.sha[:12]} into {base_name}",
        )


def _merge_body(target: str, adapter: str, sha: str, base: str, check: MergeCheck) -> str:
    return "\n".join(
        [
            f"# {target}",
            "",
            f"`{base}` with the LoRA adapter `{adapter}@{sha}` merged into its weights "
            f"(`merge_and_unload`, {check.dtype}). Serve it like any model (vLLM ready): no "
            "adapter needed at run time.",
            "",
            f"Checked before publishing: max |merged - unmerged| logit = {check.max_abs_diff:.3g} "
            f"(tolerance {check.tolerance}); greedy next-token agreement "
            f"{check.argmax_agreement:.1%} on the probe batch.",
            "",
        ]
    )
