"""``loradock eval``: parse options into EvalOptions and call ``loradock.evals.run.evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loradock.cli._common import console, print_json, print_table
from loradock.errors import ConfigError

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


@app.command("eval")
def eval_command(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Adapters (org/name[@rev|@alias]) and/or a base model (name or folder)"
        ),
    ] = None,
    tasks: Annotated[
        list[str] | None,
        typer.Option("--tasks", help="Comma-separated tasks (default: all shipped tasks)"),
    ] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", help="Rows per task (or a fraction <= 1)")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Folder for report.md/.html, plots, raw JSON")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="hf, endpoint or vllm")] = "hf",
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="A running loradock server's URL")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="LORADOCK_API_KEY", help="Endpoint key")
    ] = None,
    served_base_name: Annotated[
        str | None, typer.Option("--served-base-name", help="The endpoint's name for the base")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base", help="Pin the base: org/name@rev or a folder (default: from the cards)"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Task data folder (<task>/test.jsonl)")
    ] = None,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="Write results into each adapter's card (new revision)"),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    dtype: Annotated[str | None, typer.Option("--dtype", help="auto, float32, bfloat16")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    forgetting_threshold: Annotated[
        float,
        typer.Option("--forgetting-threshold", help="General-capability drop that is flagged"),
    ] = 0.05,
    judge_endpoint: Annotated[
        str | None,
        typer.Option("--judge-endpoint", help="OpenAI-compatible judge (off by default)"),
    ] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model")] = None,
    judge_api_key: Annotated[
        str | None, typer.Option("--judge-api-key", envvar="LORADOCK_JUDGE_API_KEY")
    ] = None,
    judge_prompts: Annotated[Path | None, typer.Option("--judge-prompts")] = None,
    judge_limit: Annotated[int | None, typer.Option("--judge-limit")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary only")] = False,
) -> None:
    """Evaluate a base model and its adapters with lm-evaluation-harness, in one report."""
    from loradock.evals.report import forgetting_checks, summary
    from loradock.evals.run import EvalOptions, evaluate

    options = EvalOptions(
        tasks=parse_tasks(tasks),
        limit=parse_limit(limit),
        backend=backend,
        endpoint=endpoint,
        api_key=api_key,
        endpoint_base_name=served_base_name,
        base=base,
        data_dir=data_dir,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        forgetting_threshold=forgetting_threshold,
        judge_endpoint=judge_endpoint,
        judge_model=judge_model,
        judge_api_key=judge_api_key,
        judge_prompts=judge_prompts,
        judge_limit=judge_limit,
    )
    run = evaluate(targets or [], report_dir=report, publish=publish, options=options)
    if json_out:
        out = summary(run)
        out["published"] = run.published
        print_json(out)
        return
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
