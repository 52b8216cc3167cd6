"""Write-back: eval results become ``model-index`` entries in the card of every model measured
(each adapter's, and the base's own, so the base's row of a leaderboard has its figures),
published as a new revision (history kept), so the registry index holds them as
``task/metric`` values that ``loradock registry search --task T --sort METRIC`` ranks by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.errors import EvalError
from loradock.evals.results import EvalTarget, TargetResult, file_sha256

if TYPE_CHECKING:
    from loradock.evals.run import EvalRun

# The PEFT files whose bytes decide whether two revisions hold the same adapter.
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_config.json")
# A base model's measured behaviour depends on every file but its card (weights, config,
# tokenizer, generation config), so all of them are compared.
CARD_FILE = "README.md"


@dataclass(frozen=True)
class PublishedEval:
    """One model's card revision written from a run."""

    repo_id: str
    kind: str  # the target's kind: "base" or "adapter"
    evaluated_sha: str
    previous_sha: str
    sha: str  # the new revision holding the card with the results
    metrics: dict[str, float]


def to_eval_metrics(result: TargetResult) -> list[Any]:
    """The registry's ``EvalMetric`` records for every metric measured on ``result``."""
    from loradock.registry.card import EvalMetric

    return [
        EvalMetric(
            task=m.task,
            dataset=m.dataset,
            metric=m.metric,
            value=m.value,
            stderr=m.stderr,
            dataset_revision=m.dataset_revision,
            task_version=m.task_version,
            task_hash=m.task_hash,
            num_fewshot=m.num_fewshot,
        )
        for m in result.metrics
    ]


def weights_digest(folder: Path, kind: str) -> dict[str, str]:
    if kind != "base":
        names = [n for n in WEIGHT_FILES if (folder / n).is_file()]
    else:  # every file of the snapshot but the card and the snapshot cache's dot-files
        files = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        names = [
            f.as_posix()
            for f in files
            if f.as_posix() != CARD_FILE and not any(part.startswith(".") for part in f.parts)
        ]
    return {name: file_sha256(folder / name) for name in sorted(names)}


def _commit_message(result: TargetResult, run: EvalRun) -> str:
    tasks = ", ".join(s.name for s in run.tasks)
    message = f"Eval results (lm-evaluation-harness) for {result.target.sha} on {tasks}"
    if result.target.kind == "base":
        return message
    base = run.base.target
    return f"{message}; base {base.pinned_name or base.label}"


def _head(registry: Any, target: EvalTarget) -> Any:
    """The repo's latest revision, checked to hold the weights that were measured."""
    if target.kind == "base":
        head = registry.resolve_base(target.repo_id)
    else:
        head = registry.resolve(target.repo_id)
    if head.sha != target.sha and weights_digest(Path(head.path), target.kind) != (
        weights_digest(target.path, target.kind)
    ):
        raise EvalError(
            f"Cannot publish results for {target.label!r}: the repo's latest revision "
            f"{head.sha[:7]} holds different weights than the evaluated {target.sha[:7]}. "
            f"Evaluate {target.repo_id} (its latest revision) and publish that."
        )
    if head.card is None:
        raise EvalError(
            f"Cannot publish results for {target.label!r}: its latest revision {head.sha[:7]} "
            "has no model card (README.md) to add them to. Publish its card first."
        )
    return head


def publish_results(
    run: EvalRun, *, registry: Any, labels: Sequence[str] | None = None
) -> list[PublishedEval]:
    """Publish every measured model's results (or those labelled in ``labels``) as a card
    revision: the base's into its own card, each adapter's into its card.

    A base given as a local folder has no repo and no card, so its results stay in the
    report. Each card is written onto the repo's current head. When the evaluated revision
    is not the head, the head must hold the same weights (only cards changed since), or the
    results would be attributed to weights that were never measured: that is refused, and
    nothing is published when any model is refused.
    """
    chosen = [
        r
        for r in run.results
        if (labels is None or r.target.label in labels)
        and not (r.target.kind == "base" and r.target.repo_id is None)
    ]
    for result in chosen:
        if not result.metrics:
            raise EvalError(
                f"Nothing to publish for {result.target.label!r}: no metric was measured."
            )
    heads = [_head(registry, r.target) for r in chosen]
    out: list[PublishedEval] = []
    for result, head in zip(chosen, heads, strict=True):
        target = result.target
        metrics = to_eval_metrics(result)
        published = registry.update_card(
            target.repo_id,
            head.card.with_eval_results(metrics),
            commit_message=_commit_message(result, run),
        )
        out.append(
            PublishedEval(
                repo_id=target.repo_id,
                kind=target.kind,
                evaluated_sha=target.sha,
                previous_sha=head.sha,
                sha=published.sha,
                metrics={m.key: m.value for m in metrics},
            )
        )
    return out
