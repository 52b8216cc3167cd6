"""What ``bench/serving.py`` writes: the results JSON, its plots and the file names that keep
each kind of run (shape, device, ``--quick``) apart, and the medians over ``--runs``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from dataclasses import asdict
from pathlib import Path

from bench.model_shapes import default_shape
from bench.serving_setup import Row, device_name


def plot(rows: list[Row], out_dir: Path, *, suffix: str = "", where: str = "cpu") -> list[Path]:
    """The ratios against their goals, the tokens/s rows against the limit, and (e)'s scaling;
    each plot only where its rows were measured. ``where`` names the machine in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    for name, draw in (
        ("serving_ratios", _ratios),
        ("serving_rows", _tokens_per_second),
        ("serving_scaling", _scaling),
    ):
        fig = draw(plt, rows, where)
        if fig is not None:
            fig.tight_layout()
            drawn.append(out_dir / f"{name}{suffix}.png")
            fig.savefig(drawn[-1])
            plt.close(fig)
    return drawn


def _short(label: str) -> str:
    return label.split(")")[0] + ")" if label.startswith("(") else label[:34]


def _ratios(plt, rows: list[Row], where: str):
    ratios = [r for r in rows if r.unit == "x"]
    if not ratios:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ratios) + 1.2))
    ax.barh([_short(r.label) for r in ratios], [r.value for r in ratios],
            color=["tab:gray" if r.ok is None else "tab:green" if r.ok else "tab:red"
                   for r in ratios])  # fmt: skip
    for i, r in enumerate(ratios):
        goal = f" (goal {r.goal})" if r.goal else " (no goal: context)"
        ax.text(r.value, i, f" {r.value:.2f}{goal}", va="center")
    ax.set_xlabel("ratio")
    ax.set_title(f"loradock serving, ratios measured in one run ({where})")
    return fig


def _tokens_per_second(plt, rows: list[Row], where: str):
    """The side-by-side rows (same prompts, batch 32) as bars, the limit as a line."""
    side = [r for r in rows if r.key.startswith("tps_")]
    limit = next((r for r in rows if r.key == "l_linear_limit"), None)
    if not side:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(side) + 1.4))
    ax.barh([r.label[:48] for r in side], [r.value for r in side], color="tab:blue")
    for i, r in enumerate(side):
        share = f" ({r.of_limit:.0%} of the limit)" if r.of_limit is not None else ""
        ax.text(r.value, i, f" {r.value:.0f}{share}", va="center")
    top = max(r.value for r in side)
    if limit is not None:
        ax.axvline(limit.value, color="tab:red", linestyle="--", label="linear layers alone")
        ax.legend(loc="lower right")
        top = max(top, limit.value)
    ax.set_xlim(0, top * 1.45)  # room for the labels
    ax.set_xlabel("tokens/s")
    ax.set_title(f"the same workload, side by side ({where})")
    return fig


def _scaling(plt, rows: list[Row], where: str):
    scaling = [r for r in rows if r.key.startswith("e_adapters_")]
    if not scaling:
        return None
    counts = [int(r.key.rsplit("_", 1)[1]) for r in scaling]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(counts, [r.value for r in scaling], "o-", color="tab:blue")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("distinct adapters in the workload (8 slots)")
    ax1.set_ylabel("tokens/s", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(counts, [r.rss_mib or 0 for r in scaling], "s--", color="tab:red")
    ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
    ax1.set_title(where, fontsize=9)
    return fig


def write_results(args: argparse.Namespace, rows: list[Row], seconds: float, about: dict) -> dict:
    """``serving<suffix>.json`` (every row, the profile) and the plots, under ``--out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = results_suffix(args.shape, args.device, args.quick)
    where = f"{args.device}: {device_name(args.device) or machine_name()}, {args.dtype}"
    plots = plot(rows, args.out, suffix=suffix, where=where)
    result = {
        "bench": "serving",
        "quick": args.quick,
        "shape": args.shape,
        "model": about["model"],
        "machine": device_name(args.device) or machine_name(),
        "device": args.device,
        "dtype": args.dtype,
        "gpu": device_name(args.device),
        "threads": args.threads,
        "runs": args.runs,
        "seconds": seconds,
        "rows": [asdict(r) for r in rows],
        "profile": about["profile"],
        "plots": [str(p) for p in plots],
    }
    (args.out / f"serving{suffix}.json").write_text(json.dumps(result, indent=2))
    return result


def results_suffix(shape: str, device: str, quick: bool) -> str:
    """What the result files' names add: ``""`` for the default (SmolLM2's shape on the CPU),
    else the shape, the device and ``-quick``, so no run overwrites another kind's files."""
    parts = [] if shape == default_shape(quick) else [shape]
    parts += [] if device == "cpu" else [device]
    parts += ["quick"] if quick else []
    return "".join(f"-{p}" for p in parts)


def machine_name() -> str:
    """The CPU's model name and its core count (the results say where they were measured)."""
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def median_rows(runs: list[list[Row]]) -> list[Row]:
    """Each figure's median over whole runs of the bench (the machine is shared and noisy);
    ``detail`` is the median run's, and lists every run's value."""
    if len(runs) == 1:
        return runs[0]
    out = []
    for same in zip(*runs, strict=True):
        ordered = sorted(same, key=lambda r: r.value)
        mid = ordered[(len(ordered) - 1) // 2]  # the lower median: an actual run
        values = ", ".join(f"{r.value:.2f}" for r in same)
        ok = mid.ok if mid.ok is None else bool(mid.ok)
        out.append(dataclasses.replace(mid, ok=ok, detail=f"{mid.detail}; runs: {values}"))
    return out
