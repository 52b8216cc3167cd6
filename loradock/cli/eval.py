"""``loradock eval``: parse options into EvalOptions and call ``loradock.evals.run.evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loradock.cli._common import console, print_json, print_table
from loradock.cli._options import with_options
from loradock.errors import ConfigError
from loradock.evals.options import EvalOptions

app = typer.Typer()


def parse_limit(text: str | None) -> int | float | None:
    """``"20"`` -> 20 rows per task; ``"0.1"`` -> a tenth of each task; ``None`` -> all."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            "Invalid eval options", [f"--limit {text!r} must be a number of rows or a fraction"]
        ) from None


def parse_tasks(values: list[str] | None) -> tuple[str, ...]:
    """``--tasks a,b --tasks c`` -> ``("a", "b", "c")``."""
    return tuple(t.strip() for v in values or () for t in v.split(",") if t.strip())


def eval_command(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Adapters (org/name[@rev|@alias]) and/or a base model (name or folder)"
        ),
    ] = None,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            "--tasks",
            help="Comma-separated lm-eval tasks, groups or tags (default: the shipped tasks)",
        ),
    ] = None,
    include_path: Annotated[
        list[Path] | None,
        typer.Option("--include-path", help="A folder of task YAMLs, as lm-eval's (repeatable)"),
    ] = None,
    forgetting: Annotated[
        list[str] | None,
        typer.Option(
            "--forgetting",
            help="Tasks or groups checked for forgetting, run too (e.g. mmlu,arc_easy; "
            "default: the shipped general tasks run)",
        ),
    ] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", help="Rows per task (or a fraction <= 1)")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Folder for report.md/.html, plots, raw JSON")
    ] = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Write results into each model's card, the base's too (new revisions)",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary only")] = False,
    **fields: Any,
) -> None:
    """Evaluate a base model and its adapters with lm-evaluation-harness, in one report."""
    from loradock.evals.report import summary
    from loradock.evals.run import evaluate

    options = EvalOptions(
        tasks=parse_tasks(tasks),
        include_paths=tuple(include_path or ()),
        forgetting=parse_tasks(forgetting),
        limit=parse_limit(limit),
        **fields,
    )
    run = evaluate(targets or [], report_dir=report, publish=publish, options=options)
    if json_out:
        out = summary(run)
        out["published"] = run.published
        print_json(out)
        return
    _print_run(run)


def _print_run(run: Any) -> None:
    """The results table, forgetting flags, judge verdicts and published revisions."""
    from loradock.evals.forgetting import forgetting_checks

    rows = [
        (
            r.target.label,
            m.task,
            m.metric,
            f"{m.value:.4f}",
            "" if m.stderr is None else f"{m.stderr:.4f}",
        )
        for r in run.results
        for m in r.metrics
    ]
    print_table(
        "lm-evaluation-harness results", ["target", "task", "metric", "value", "stderr"], rows
    )
    for check in forgetting_checks(run):
        if check.flagged:
            console.print(
                f"[bold yellow]forgetting:[/] {check.adapter} {check.task}/{check.metric} "
                f"{check.base_value:.4f} -> {check.value:.4f} ({check.delta:+.4f})"
            )
    for judged in run.judged:
        console.print(
            f"judge {judged.judge_model}: {judged.model_b} vs {judged.model_a}: "
            f"{judged.wins_b} wins, {judged.wins_a} losses, {judged.ties} ties"
        )
    for pub in run.published:
        console.print(f"published results for {pub.repo_id}: new revision {pub.sha}")
    if run.report_dir:
        console.print(f"report: {run.report_files['html']}")


app.command("eval")(with_options(eval_command, EvalOptions))
