"""The eval report: Markdown and HTML, a plot per task, lm-eval's raw JSON kept beside them.

Per task, the base and each adapter side by side with stderr and the delta against the base,
under the task's lm-eval version, n-shot and config hash (targets measured on different ones
are marked, never silently compared). The general-capability tasks (``--forgetting``, or the
shipped general and perplexity tasks) carry the forgetting check: an adapter worse than the
base by more than ``--forgetting-sigmas`` combined standard errors is flagged; a metric without
a stderr (perplexity) is flagged beyond a relative ``--forgetting-threshold``. An adapter
combined from several (``loradock merge --into adapter``) is shown next to each source on the
source's task (``report_merge``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loradock.evals.forgetting import forgetting_checks, version_mismatches
from loradock.evals.report_merge import merge_lines
from loradock.evals.results import MetricResult, TargetResult

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo
    from loradock.evals.run import EvalRun

# Punctuation that Markdown (CommonMark and Python-Markdown alike) would read as markup.
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+\-.!|])")
_BACKTICKS = re.compile(r"`+")


def _text(value: object) -> str:
    """``value`` shown literally in the report: labels, task and metric names come from
    cards, task folders and results, so none may add links, HTML or table cells."""
    one_line = re.sub(r"[\r\n]+", " ", str(value))
    return html.escape(_MD_PUNCT.sub(r"\\\1", one_line), quote=False)


def _code(value: object, *, in_table: bool = False) -> str:
    """``value`` as a code span nothing inside can close (the fence outgrows its backticks);
    in a table, GFM splits cells on ``|`` even inside code, so it is escaped there."""
    text = re.sub(r"[\r\n]+", " ", str(value))
    text = text.replace("|", "\\|") if in_table else text
    fence = "`" * (max((len(r) for r in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "target"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:.4g}"
    return f"{value:.4f}"


def _cell(m: MetricResult | None, base: MetricResult | None) -> str:
    if m is None:
        return "-"
    text = _fmt(m.value)
    if m.stderr is not None:
        text += f" ± {_fmt(m.stderr)}"
    if base is not None and m is not base:
        delta = m.value - base.value
        better = delta > 0 if m.higher_is_better is not False else delta < 0
        arrow = "▲" if delta and better else ("▼" if delta else "")
        text += f" ({delta:+.4g}{arrow})"
    return text


def _plot_task(task: str, results: Sequence[TargetResult], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(m.metric for r in results for m in r.metrics if m.task == task))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(4.0, 3.2 * len(metrics)), 3.4), squeeze=False
    )
    labels = [r.target.label for r in results]
    colours = plt.get_cmap("tab10").colors
    for ax, metric in zip(axes[0], metrics, strict=True):
        values, errors = [], []
        for r in results:
            m = r.get(task, metric)
            values.append(m.value if m else 0.0)
            errors.append(m.stderr if m and m.stderr is not None else 0.0)
        ax.bar(
            range(len(labels)),
            values,
            yerr=errors,
            capsize=4,
            color=[colours[i % len(colours)] for i in range(len(labels))],
        )
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(
            [lbl.split("/")[-1] for lbl in labels], rotation=20, ha="right", fontsize=7
        )
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(task, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _task_line(run: EvalRun, task: str, spec: TaskInfo) -> str:
    m = next((m for m in run.base.metrics if m.task == task), None)
    version = m.task_version if m and m.task_version is not None else "?"
    shots = m.num_fewshot if m and m.num_fewshot is not None else "?"
    kind = "group" if getattr(spec, "is_group", False) else spec.kind
    return (
        f"Data set {_code(spec.dataset)} ({_text(kind)}); version {_code(version)}, "
        f"{_text(shots)}-shot; task hash {_code(run.task_hashes.get(task, '')[:12])}."
    )


def _forgetting_lines(run: EvalRun) -> list[str]:
    checks = forgetting_checks(run)
    lines = ["## Forgetting check", ""]
    if not checks:
        lines += ["No general-capability task was run with an adapter, so nothing was checked.", ""]
    else:
        lines += [
            "| adapter | task | metric | base | adapter | delta | limit | flag |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in checks:
            flag = "**FORGETTING**" if c.flagged else "ok"
            lines.append(
                f"| {_code(c.adapter, in_table=True)} | {_text(c.task)} | {_text(c.metric)} "
                f"| {_fmt(c.base_value)} | {_fmt(c.value)} "
                f"| {c.delta:+.4g} | {_text(c.limit)} | {flag} |"
            )
        lines.append("")
    return lines


def render_markdown(run: EvalRun, plots: dict[str, str], raw_files: dict[str, str]) -> str:
    lines = ["# loradock eval report", ""]
    o = run.options
    lines += [
        f"- Base: {_code(run.base.target.label)}"
        + (f" (sha {_code(run.base.target.sha)})" if run.base.target.sha else ""),
        *[f"- Adapter: {_code(a.target.label)} (sha {_code(a.target.sha)})" for a in run.adapters],
        f"- Backend: {_code(o.backend)}; tasks: {', '.join(_code(s.name) for s in run.tasks)}; "
        f"limit: {o.limit if o.limit is not None else 'none (full test sets)'}",
        "- Harness: lm-evaluation-harness `simple_evaluate`; forgetting flagged beyond "
        f"{o.forgetting_sigmas:g} combined stderr (else {o.forgetting_threshold:.0%} relative)",
        "",
    ]
    lines += _forgetting_lines(run)
    mismatches = version_mismatches(run)
    for spec in run.tasks:
        lines += [f"## {_text(spec.name)}", "", _task_line(run, spec.name, spec), ""]
        if spec.name in mismatches:
            lines += [
                "**Not comparable:** measured on another task version, config or n-shot than "
                f"the base: {', '.join(_code(label) for label in mismatches[spec.name])}.",
                "",
            ]
        labels = [_code(r.target.label, in_table=True) for r in run.results]
        header = "| metric | " + " | ".join(labels) + " |"
        lines += [header, "|---" * (len(run.results) + 1) + "|"]
        metrics = list(
            dict.fromkeys(m.metric for r in run.results for m in r.metrics if m.task == spec.name)
        )
        for metric in metrics:
            base = run.base.get(spec.name, metric)
            arrow = "↑" if base is None or base.higher_is_better is not False else "↓"
            cells = [_cell(r.get(spec.name, metric), base) for r in run.results]
            lines.append(f"| {_text(metric)} {arrow} | " + " | ".join(cells) + " |")
        lines.append("")
        if spec.name in plots:
            lines += [f"![{_text(spec.name)}]({plots[spec.name]})", ""]
    lines += merge_lines(run, _text, _code, _fmt)
    if run.judged:
        lines += [
            "## Pairwise judge (base = A)",
            "",
            "| adapter (B) | judge | B wins | A wins | ties | B win rate |",
            "|---|---|---|---|---|---|",
        ]
        for j in run.judged:
            lines.append(
                f"| {_code(j.model_b, in_table=True)} | {_code(j.judge_model, in_table=True)} "
                f"| {j.wins_b} | {j.wins_a} | {j.ties} | {j.win_rate_b:.2f} |"
            )
        lines.append("")
    lines += ["## Raw results", ""]
    lines += [f"- {_code(label)}: [{path}]({path})" for label, path in raw_files.items()]
    lines.append("")
    return "\n".join(lines)


def render_html(markdown_text: str) -> str:
    """The report as a page; raw HTML in the Markdown is shown as text, never as markup."""
    import markdown

    converter = markdown.Markdown(extensions=["tables"])
    # Values are escaped in render_markdown already; this keeps the page inert even for
    # Markdown written elsewhere (Python-Markdown passes raw HTML through by default).
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    body = converter.convert(markdown_text)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>loradock eval report</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "img{max-width:100%}</style></head><body>\n"
        f"{body}\n</body></html>\n"
    )


def write_report(run: EvalRun, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.html, plots/<task>.png and raw/<target>.json into ``out_dir``."""
    from loradock.evals.run import raw_json

    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    raw_files: dict[str, str] = {}
    for result in run.results:
        name = _safe(result.target.label)
        path = out / "raw" / f"{name}.json"
        path.write_text(raw_json(result), encoding="utf-8")
        raw_files[result.target.label] = f"raw/{name}.json"
        files[f"raw:{result.target.label}"] = path
        if result.samples:
            samples = out / "raw" / f"{name}.samples.jsonl"
            from lm_eval.utils import handle_non_serializable

            with samples.open("w", encoding="utf-8") as fh:
                for task, rows in result.samples.items():
                    for row in rows:
                        fh.write(
                            json.dumps({"task": task, **row}, default=handle_non_serializable)
                            + "\n"
                        )
    plots: dict[str, str] = {}
    for spec in run.tasks:
        if any(m.task == spec.name for r in run.results for m in r.metrics):
            path = _plot_task(spec.name, run.results, out / "plots" / f"{_safe(spec.name)}.png")
            plots[spec.name] = f"plots/{path.name}"
            files[f"plot:{spec.name}"] = path
    text = render_markdown(run, plots, raw_files)
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(text, encoding="utf-8")
    files["html"] = out / "report.html"
    files["html"].write_text(render_html(text), encoding="utf-8")
    files["summary"] = out / "summary.json"
    files["summary"].write_text(json.dumps(summary(run), indent=2), encoding="utf-8")
    run.report_dir = out
    run.report_files = files
    return files


def summary(run: EvalRun) -> dict:
    """A compact JSON view of the run (what ``loradock eval --json`` prints)."""
    return {
        "backend": run.options.backend,
        "tasks": [s.name for s in run.tasks],
        "task_hashes": run.task_hashes,
        "not_comparable": version_mismatches(run),
        "targets": [
            {
                "label": r.target.label,
                "kind": r.target.kind,
                "repo_id": r.target.repo_id,
                "sha": r.target.sha,
                "metrics": {
                    m.key: {
                        "value": m.value,
                        "stderr": m.stderr,
                        "n": m.n_samples,
                        "version": m.task_version,
                        "n_shot": m.num_fewshot,
                    }
                    for m in r.metrics
                },
            }
            for r in run.results
        ],
        "forgetting": [c.__dict__ for c in forgetting_checks(run)],
        "judge": [
            {
                "model_a": j.model_a,
                "model_b": j.model_b,
                "judge": j.judge_model,
                "wins_a": j.wins_a,
                "wins_b": j.wins_b,
                "ties": j.ties,
                "win_rate_b": j.win_rate_b,
            }
            for j in run.judged
        ],
        "report_dir": str(run.report_dir) if run.report_dir else None,
    }
