"""Several adapters of one base combined into one with PEFT's ``add_weighted_adapter``.

``source_problems`` checks what the sources must share (base, PEFT type, the rank that the
element-wise methods need) from their configs and cards alone, so a bad combination is
refused before any weights load; ``combine_adapters`` then builds the combined adapter
in float32 and writes it as a plain PEFT adapter folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from loradock.training.merge_config import EQUAL_RANK_METHODS, MergeConfig

# DARE drops values at random: a fixed seed makes the same command give the same adapter.
DARE_SEED = 0
_COMBINED = "combined"


def base_of(adapter) -> str | None:
    """``base[@revision]`` of a resolved adapter: its card's, else its PEFT config's."""
    card = adapter.card
    if card is not None and card.base_model:
        return f"{card.base_model}@{card.base_revision}" if card.base_revision else card.base_model
    return adapter.artifact.base_model


def source_problems(config: MergeConfig, adapters: Sequence) -> list[str]:
    """Every reason the resolved ``adapters`` cannot be combined by ``config.method``."""
    problems = []
    bases = {a.name: base_of(a) for a in adapters}
    if None in bases.values():
        missing = ", ".join(n for n, b in bases.items() if b is None)
        problems.append(f"{missing}: no base model named (card or adapter_config.json)")
    named = [b for b in bases.values() if b]
    revisions = {b.partition("@")[2] for b in named if "@" in b}
    # A source that names no base revision is taken as made for the others' revision.
    if len({b.partition("@")[0] for b in named}) > 1 or len(revisions) > 1:
        listed = "; ".join(f"{n} -> {b}" for n, b in bases.items())
        problems.append(f"the adapters are for different bases ({listed}): merge one base's")
    not_lora = [a.name for a in adapters if a.artifact.peft_type != "LORA"]
    if not_lora:
        problems.append(f"{', '.join(not_lora)}: not LoRA adapters")
    ranks = {a.name: a.artifact.max_rank for a in adapters}
    if config.method in EQUAL_RANK_METHODS and len(set(ranks.values())) > 1:
        listed = ", ".join(f"{n} r={r}" for n, r in ranks.items())
        problems.append(
            f"method={config.method!r} needs adapters of one rank ({listed}); "
            "cat and svd take any ranks"
        )
    forms = {type(a.artifact.config.get("target_modules")).__name__ for a in adapters}
    if len(forms) > 1:
        problems.append(
            "target_modules are a list in some adapters and a regex in others: "
            "PEFT cannot combine them"
        )
    return problems


def combine_adapters(
    base_path: Path, adapter_paths: Sequence[Path], config: MergeConfig, out: Path
) -> Path:
    """The sources combined into one adapter folder at ``out`` (float32 LoRA weights)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    names = [f"source{i}" for i in range(len(adapter_paths))]
    model = PeftModel.from_pretrained(base, str(adapter_paths[0]), adapter_name=names[0])
    for name, path in zip(names[1:], adapter_paths[1:], strict=True):
        model.load_adapter(str(path), adapter_name=name)
    torch.manual_seed(DARE_SEED)
    model.add_weighted_adapter(
        names,
        list(config.weights_used),
        _COMBINED,
        combination_type=config.method,
        density=config.density_used,
    )
    with tempfile.TemporaryDirectory(prefix="loradock-combine-") as tmp:
        # PEFT writes an adapter that is not "default" into a sub-folder of its name.
        # No embedding layer is adapted: skip PEFT's look-up of the base's vocabulary.
        model.save_pretrained(tmp, selected_adapters=[_COMBINED], save_embedding_layers=False)
        shutil.copytree(Path(tmp) / _COMBINED, out)
    return out
