"""``loradock train JOB.yaml`` and ``loradock merge REPO[@rev]`` (thin: parse, call, print)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from loradock.cli._common import console, print_json, print_table

app = typer.Typer()


def _heldout_rows(metrics: dict) -> list[tuple[str, str, str]]:
    heldout = metrics.get("heldout") or {}
    base, adapter = heldout.get("base"), heldout.get("adapter")
    if not base or not adapter:
        return []
    rows = [
        (name, f"{base['metrics'].get(name, float('nan')):.4f}", f"{value:.4f}")
        for name, value in adapter["metrics"].items()
    ]
    if adapter.get("perplexity") is not None:
        rows.append(("perplexity", f"{base['perplexity']:.3f}", f"{adapter['perplexity']:.3f}"))
    return rows


@app.command()
def train(
    job: Path = typer.Argument(..., help="The job YAML (see training/jobs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override output_dir."),
    no_publish: bool = typer.Option(False, "--no-publish", help="Train and save, don't publish."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Log to TensorBoard too."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune a LoRA/QLoRA adapter with trl and publish it with its card (one command)."""
    from loradock.training.config import JobConfig
    from loradock.training.job import run_job

    config = JobConfig.from_yaml(job)
    if output_dir is not None:
        config.output_dir = output_dir
    if no_publish:
        config.publish.enabled = False
    if tensorboard:
        targets = [t for t in config.trainer.report_targets if t != "none"]
        config.trainer.report_to = [*targets, "tensorboard"]
    if not as_json:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_job(config, resume=resume, progress=not as_json)
    if as_json:
        print_json(result)
        return
    summary = result.metrics.get("train", {})
    console.print(
        f"trained [bold]{config.name}[/]: {summary.get('global_step')} steps, "
        f"loss {summary.get('first_loss')} -> {summary.get('last_loss')}; adapter in {result.adapter_dir}"
    )
    rows = _heldout_rows(result.metrics)
    if rows:
        print_table("held-out evaluation", ["metric", "base", "adapter"], rows)
    if result.repo_id:
        console.print(f"published [bold]{result.repo_id}@{result.sha}[/]")


@app.command()
def merge(
    name: str = typer.Argument(..., help="The adapter: org/name[@revision or alias]."),
    repo_id: str | None = typer.Option(
        None, "--repo-id", help="Where to publish the merged model."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Merge an adapter into a full-precision copy of its base, check, publish (vLLM-ready)."""
    from loradock.training.merge import merge_adapter

    published = merge_adapter(name, repo_id=repo_id)
    check = published.card.training.get("merge_check", {})
    if as_json:
        print_json(
            {"repo_id": published.repo_id, "sha": published.sha, "kind": published.kind, **check}
        )
        return
    console.print(
        f"merged [bold]{name}[/] -> [bold]{published.repo_id}@{published.sha}[/] "
        f"(max |logit diff| {check.get('max_abs_logit_diff', float('nan')):.3g}, "
        f"dtype {check.get('dtype')})"
    )
