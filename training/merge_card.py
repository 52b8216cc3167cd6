"""The card of a merge: where it came from (every source's ``repo@sha``, the method, weights
and density) and, for merged weights, how closely they follow the unmerged adapter.

All of it sits under the card's ``loradock`` mapping (``training["merge"]`` and
``training["merge_check"]``), which the registry's card parser keeps as it is. Each source's
task is tagged (``task:<name>``), so the index finds a combination under every task it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loradock.registry.card import AdapterCard, build_adapter_card
from loradock.training.merge_check import MergeCheck
from loradock.training.merge_config import MergeConfig
from loradock.training.merge_sources import DARE_SEED


def merge_record(config: MergeConfig, adapters: Sequence, dtype: str | None) -> dict[str, Any]:
    """``training["merge"]``: the sources and how they were combined."""
    record: dict[str, Any] = {
        "sources": [
            {
                "repo_id": a.repo_id,
                "revision": a.sha,
                "task": a.card.task if a.card else None,
                "weight": w,
            }
            for a, w in zip(adapters, config.weights_used, strict=True)
        ],
        "method": config.method if config.several else "merge_and_unload",
        "into": config.into,
    }
    if config.several:
        record["weights"] = list(config.weights_used)
    if config.density_used is not None:
        record["density"] = config.density_used
    if config.method.startswith("dare_"):
        record["seed"] = DARE_SEED
    if dtype is not None:
        record["dtype"] = dtype
    return record


def merge_card(
    config: MergeConfig, adapters: Sequence, base, *, check: MergeCheck | None
) -> AdapterCard:
    """The card for ``config.target_repo`` (``relation`` "merge" with a check, else "adapter")."""
    cards = [a.card for a in adapters if a.card is not None]
    tasks = list(dict.fromkeys(c.task for c in cards if c.task))
    base_model = base.repo_id or next(c.base_model for c in cards if c.base_model)
    training: dict[str, Any] = {"merge": merge_record(config, adapters, check and check.dtype)}
    if check is not None:
        training["merge_check"] = check.as_card()
    if not config.several and cards:
        training["adapter_training"] = dict(cards[0].training)
    return build_adapter_card(
        base_model=base_model,
        base_revision=base.sha,
        task=tasks[0] if tasks else None,
        datasets=list(dict.fromkeys(d for c in cards for d in c.datasets)),
        tags=["loradock", "merged", *(["vllm"] if check else [])]
        + [f"task:{t}" for t in tasks[1:]],
        # One source merged whole keeps its scores (the check shows it answers the same);
        # a combination is a new model, not yet evaluated.
        eval_results=cards[0].eval_results if not config.several and cards else (),
        training=training,
        body=_body(config, adapters, base_model, check),
        relation="merge" if check is not None else "adapter",
    )


def _body(config: MergeConfig, adapters: Sequence, base: str, check: MergeCheck | None) -> str:
    sources = ", ".join(f"`{a.repo_id}@{a.sha}`" for a in adapters)
    if config.several:
        how = f"{sources} combined with PEFT's `add_weighted_adapter` ({config.method}"
        how += f", weights {', '.join(f'{w:g}' for w in config.weights_used)}"
        how += f", density {config.density_used:g})" if config.density_used else ")"
    else:
        how = f"the LoRA adapter {sources}"
    lines = [f"# {config.target_repo}", ""]
    if check is None:
        lines += [f"A LoRA adapter on `{base}`: {how}.", ""]
        return "\n".join(lines)
    lines += [
        f"`{base}` with {how} merged into its weights (in float32, written as {check.dtype}). "
        "Serve it like any model (vLLM ready): no adapter needed at run time.",
        "",
        f"Checked against the unmerged adapter before publishing: {check.summary()}.",
        "",
    ]
    return "\n".join(lines)
