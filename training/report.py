"""What a finished job writes about itself: the loss log, its plot, and the model card."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

LOSS_PLOT = "training_loss.png"
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in (*LIBRARIES, "loradock"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def loss_points(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``train`` and ``eval`` loss as (step, value) pairs from the trainer's log history."""
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e]
    return {"train": train, "eval": evals}


def write_loss_log(log_history: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in log_history))
    return path


def plot_loss(log_history: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """A PNG of training (and validation) loss per step; Agg backend, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = loss_points(log_history)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, series in points.items():
        if series:
            xs, ys = zip(*series, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=f"{label} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(points.values()):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def card_body(
    *,
    repo_id: str,
    base_model: str,
    task: str | None,
    heldout: dict[str, Any],
    job_yaml: str,
    data_hash: str | None,
    train_summary: dict[str, Any],
) -> str:
    """The card's markdown: what it is, held-out results, the loss plot, how to re-run it."""
    lines = [
        f"# {repo_id}",
        "",
        f"A LoRA adapter for [`{base_model}`](../{base_model}) trained by `loradock train`"
        + (f" on the shipped `{task}` task." if task else "."),
        "",
        "## Held-out evaluation (test split, greedy decoding)",
        "",
    ]
    base, adapter = heldout.get("base"), heldout.get("adapter")
    if base is not None and adapter is not None:
        names = list(adapter.metrics) + ["perplexity"]
        lines += ["| metric | base | adapter |", "|---|---|---|"]
        for name in names:
            b = base.perplexity if name == "perplexity" else base.metrics.get(name)
            a = adapter.perplexity if name == "perplexity" else adapter.metrics.get(name)
            lines.append(f"| {name} | {_fmt(b)} | {_fmt(a)} |")
        lines.append(f"\nExamples evaluated: {heldout.get('examples', 'n/a')}.")
    else:
        lines.append("Not run for this job (eval.enabled: false).")
    lines += [
        "",
        "## Training",
        "",
        f"![training loss]({LOSS_PLOT})",
        "",
        f"- steps: {train_summary.get('global_step')}, final train loss: "
        f"{_fmt(train_summary.get('train_loss'))}",
        f"- tokens seen: {train_summary.get('num_input_tokens_seen')}, "
        f"tokens/s: {_fmt(train_summary.get('tokens_per_second'))}",
        f"- data content hash: `{data_hash}`",
        "",
        "## Re-run this job",
        "",
        "Save the YAML below as `job.yaml` and run `loradock train job.yaml` "
        "(the full resolved config is also in the card's `loradock.job` metadata).",
        "",
        "```yaml",
        job_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def job_yaml_text(config: Any) -> str:
    """The job as YAML: the user's own file when there is one, else the resolved config."""
    if config.source_text:
        return config.source_text
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
