"""Write-back: eval results become ``model-index`` entries in each adapter's card, published as a
new revision (history kept), so the registry index holds them as ``task/metric`` values that
``loradock registry search --task T --sort METRIC`` ranks by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.errors import EvalError
from loradock.evals.results import TargetResult, file_sha256

if TYPE_CHECKING:
    from loradock.evals.run import EvalRun

# The PEFT files whose bytes decide whether two revisions hold the same adapter.
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class PublishedEval:
    """One adapter's card revision written from a run."""

    repo_id: str
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


def _weights_digest(folder: Path) -> dict[str, str]:
    return {name: file_sha256(folder / name) for name in WEIGHT_FILES if (folder / name).is_file()}


def _commit_message(result: TargetResult, run: EvalRun) -> str:
    tasks = ", ".join(s.name for s in run.tasks)
    base = run.base.target
    return (
        f"Eval results (lm-evaluation-harness) for {result.target.sha} on {tasks}; "
        f"base {base.pinned_name or base.label}"
    )


def publish_results(
    run: EvalRun, *, registry: Any, adapters: Sequence[str] | None = None
) -> list[PublishedEval]:
    """Publish every adapter's results (or those labelled in ``adapters``) as a card revision.

    The card is written onto the repo's current head. When the evaluated revision is not the
    head, the head must hold the same weights (only cards changed since), or the results would
    be attributed to weights that were never measured: that is refused.
    """
    chosen = [r for r in run.adapters if adapters is None or r.target.label in adapters]
    out: list[PublishedEval] = []
    for result in chosen:
        target = result.target
        if not result.metrics:
            raise EvalError(f"Nothing to publish for {target.label!r}: no metric was measured.")
        head = registry.resolve(target.repo_id)
        if head.sha != target.sha and _weights_digest(Path(head.path)) != _weights_digest(
            target.path
        ):
            raise EvalError(
                f"Cannot publish results for {target.label!r}: the repo's latest revision "
                f"{head.sha[:7]} holds different weights than the evaluated {target.sha[:7]}. "
                f"Evaluate {target.repo_id} (its latest revision) and publish that."
            )
        metrics = to_eval_metrics(result)
        card = head.card.with_eval_results(metrics)
        published = registry.update_card(
            target.repo_id, card, commit_message=_commit_message(result, run)
        )
        out.append(
            PublishedEval(
                repo_id=target.repo_id,
                evaluated_sha=target.sha,
                previous_sha=head.sha,
                sha=published.sha,
                metrics={m.key: m.value for m in metrics},
            )
        )
    return out
