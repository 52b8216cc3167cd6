"""``loradock train JOB.yaml`` and ``loradock merge REPO[@rev]...`` (thin: parse, call, print).

``merge``'s options are made from ``MergeConfig``'s fields (``loradock/cli/_options.py``):
their defaults and help text live in ``training/merge_config.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from loradock.cli._common import console, print_json, print_table
from loradock.cli._options import with_options
from loradock.training.merge_config import MergeConfig

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


def merge_command(
    sources: list[str] = typer.Argument(
        ..., help="The adapters (org/name, org/name@sha or @alias), one or several of one base."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="One weight per adapter, comma-separated (default: equal, sum 1)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    **options: Any,
) -> None:
    """Merge adapters into their base (or into one adapter), check, publish (vLLM-ready)."""
    from loradock.training.merge import merge

    published = merge(MergeConfig.from_options(sources, weights, **options))
    training = published.card.training
    check = training.get("merge_check")
    if as_json:
        info = {"repo_id": published.repo_id, "sha": published.sha, "kind": published.kind}
        print_json({**info, "merge": training.get("merge"), "check": check})
        return
    console.print(
        f"merged [bold]{', '.join(sources)}[/] -> [bold]{published.repo_id}@{published.sha}[/] "
        f"({published.kind})"
    )
    if check:
        print_table(
            f"merged against unmerged ({check['dtype']} weights, computed in "
            f"{check.get('compute_dtype', check['dtype'])}; {check['probe']})",
            ["figure", "measured", "needed"],
            [
                (
                    f"greedy tokens agree, adapter decided (> {check['tie_nats']:g} nats)",
                    f"{check['decided_agreement']:.2%} of {check['decided_tokens']}",
                    f">= {check['min_token_agreement']:.1%}",
                ),
                ("greedy tokens agree, all", f"{check['token_agreement']:.2%}", ""),
                ("mean KL (nats/token)", f"{check['mean_kl']:.3g}", f"<= {check['max_mean_kl']:g}"),
                ("max KL", f"{check['max_kl']:.3g}", ""),
                ("whole answers identical", f"{check['answer_agreement']:.0%}", ""),
            ],
        )


app.command("merge")(with_options(merge_command, MergeConfig))
