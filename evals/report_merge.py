"""The report's merge section: what a combination of adapters kept of each source.

An adapter made by ``loradock merge A B --into adapter`` carries its sources in its card
(``training["merge"]``). For each such target evaluated in the run, every task a source was
trained for is shown with the source's score, the combination's, and the share it kept
(combination / source). A source that was not evaluated in the same run shows as ``-``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loradock.evals.results import TargetResult

if TYPE_CHECKING:
    from loradock.evals.run import EvalRun


def merge_record(result: TargetResult) -> dict[str, Any] | None:
    """The card's record of a combination of several adapters, or None."""
    training = getattr(result.target.card, "training", None) or {}
    record = training.get("merge") if isinstance(training, dict) else None
    if not isinstance(record, dict) or len(record.get("sources") or []) < 2:
        return None
    return record


def merge_lines(
    run: EvalRun,
    text: Callable[[object], str],
    code: Callable[..., str],
    fmt: Callable[[float | None], str],
) -> list[str]:
    """The section's Markdown lines (empty when the run evaluated no combination);
    ``text``, ``code`` and ``fmt`` are the report's escaping and number helpers."""
    lines: list[str] = []
    for combo in run.adapters:
        record = merge_record(combo)
        if record is None:
            continue
        if not lines:
            lines += ["## Merged adapters: what each combination kept of its sources", ""]
        how = f"{record.get('method')}, weights {record.get('weights')}"
        if record.get("density") is not None:
            how += f", density {record['density']}"
        lines += [
            f"{code(combo.target.label)} ({text(how)}):",
            "",
            "| source | weight | task | metric | source | combination | kept |",
            "|---|---|---|---|---|---|---|",
        ]
        for src in record["sources"]:
            source = next((r for r in run.adapters if r.target.repo_id == src["repo_id"]), None)
            task = src.get("task")
            metrics = [m for m in combo.metrics if m.task == task]
            for m in metrics:
                own = source.get(task, m.metric) if source else None
                # a share means something only for a score (higher is better), not a loss
                shared = own is not None and own.value and m.higher_is_better is not False
                kept = f"{m.value / own.value:.0%}" if shared else "-"
                lines.append(
                    f"| {code(src['repo_id'], in_table=True)} | {src.get('weight')} "
                    f"| {text(task)} | {text(m.metric)} | {fmt(own.value if own else None)} "
                    f"| {fmt(m.value)} | {kept} |"
                )
        lines.append("")
    return lines
