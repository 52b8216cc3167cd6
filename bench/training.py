"""Training figures as ratios measured side by side in one run: ``python -m bench.training``.

(a) tokens/s of ``run_job`` (the ``loradock train`` path) / a bare trl ``SFTTrainer`` script with
    the same model, data and settings (goal >= 0.95), both with the job default packing for this
    device (``packing: auto``)
(b) tokens/s with packing (bfd, padding-free) / without, same batch size (goal >= 1.5), on
    short varied-length instruction rows (``--data mixed``, the default:
    ``loradock.training.mixed``) and again on the uniform ``dates`` rows (~103 tokens each);
    each side reports its real tokens, the tokens actually computed (padding included: every
    batch the collator hands the model is counted), steps and tokens/s
(c) peak resident memory of a LoRA and a QLoRA (NF4) run, and the model's own footprint

Fair by construction: every run trains ONE EPOCH OF THE SAME ROWS (packed runs take fewer,
fuller steps), so both sides process the same real tokens, counted from the prepared data set
(never padding); tokens/s = those tokens / the trainer's ``train_runtime`` (wall time of the
loop). The process CPU time of the same loop is recorded too: on a shared machine it is far
less disturbed by other jobs than wall time. Every measurement runs in its own spawned process
(so peak RSS is that run's alone); runs alternate between the compared sides and each figure
keeps the best of ``--repeats`` (a shared machine's noise only ever slows a run down).

    python -m bench.training --threads 1          # SmolLM2-135M's shape (imported or random)
    python -m bench.training --shape llama-1b     # a 1B-class Llama, random weights
    python -m bench.training --data dates         # packing measured on the uniform rows only
    python -m bench.training --small --json       # tiny random model: the smoke test's size
    python -m bench.training --small --preload    # runs forked from one process that imported
                                                  # the libraries once (the smoke test's way)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from bench.model_shapes import SHAPES, build_base, default_shape
from bench.training_runs import bf16_autocast, measure, run_device, trl_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).parent / "results" / "training.json"
DATES = Path(__file__).resolve().parents[1] / "training" / "data" / "dates" / "train.jsonl"
DATA_SETS = ("mixed", "dates")
TRAINING_SHAPES = tuple(s for s in SHAPES if s != "toy")  # --small is the toy here
DEFAULT_SHAPE = default_shape(quick=False)
GOALS = {"loradock_vs_bare": 0.95, "packing_vs_no_packing": 1.5}


def _settings(small: bool, rows: int | None) -> dict[str, Any]:
    return {
        # One epoch of these rows per run; more mixed rows, so their lengths are a fair sample.
        "rows": {"mixed": rows or (64 if small else 128), "dates": rows or 48},
        # The shipped jobs' batch size (TrainerSettings' default): packing's gain depends on
        # it (an unpacked batch pads to its longest row), so bench what a job runs.
        "batch": _job_batch_size(),
        "max_length": 512,
        "lr": 2e-4,
        "r": 8 if small else 16,
    }


def _job_batch_size() -> int:
    from loradock.training.trainer_config import TrainerSettings

    return TrainerSettings().per_device_train_batch_size


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def write_data(name: str, rows: int, folder: Path) -> Path:
    """The rows one side trains on, as a jsonl file both the job and the bare script read."""
    path = folder / f"{name}.jsonl"
    if name == "mixed":
        from loradock.training.mixed import write_mixed

        return write_mixed(path, rows)
    path.write_text("".join(line + "\n" for line in DATES.read_text().splitlines()[:rows]))
    return path


def default_packing(data: Path, base_path: str, settings: dict[str, Any]):
    """What a job's ``packing: auto`` resolves to for these rows on this machine."""
    from transformers import AutoTokenizer

    from loradock.training.packing import decide_packing, token_lengths

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    lengths = token_lengths(trl_rows(data), tokenizer, max_length=settings["max_length"])
    return decide_packing("auto", run_device(), lengths, settings["batch"]), lengths


def _best(runs: list[dict[str, Any]], key: str = "tokens_per_second") -> float:
    return max(r[key] for r in runs)


def _cpu_speed(run: dict[str, Any]) -> float:
    return run["tokens"] / run["cpu_s"]


def resolve_base(
    small: bool,
    base: str | None,
    tmp: Path,
    random_base: str | None = None,
    shape: str = DEFAULT_SHAPE,
) -> tuple[str, str]:
    """(model folder both sides train, what its weights are): a tiny model (``--small``), a
    random-weight copy of a model folder's architecture (``--random-base``), a registry base
    (``--base``), or a shape of ``bench/model_shapes.py`` (SmolLM2's by default)."""
    if random_base:
        from loradock.tiny import make_random_base

        path = make_random_base(random_base, tmp / "random-base")
        return str(path), f"random weights, architecture of {random_base}"
    if small:
        from loradock.tiny import make_tiny_base

        path = make_tiny_base(tmp / "tiny-base", hidden_size=128, num_layers=2)
        return str(path), "tiny (hidden 128, 2 layers)"
    if base:
        from loradock.registry.api import Registry

        return str(Registry.open().resolve_base(base).path), base
    path, model = build_base(shape, tmp / "shape-base")
    return str(path), model


def _side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side of a packing comparison: what it computed and how fast (best of the repeats)."""
    first = runs[0]
    return {
        "real_tokens": first["tokens"],
        "computed_tokens": first["computed_tokens"],
        "padding_fraction": 1 - first["tokens"] / first["computed_tokens"],
        "steps": first["steps"],
        "tokens_per_second": [r["tokens_per_second"] for r in runs],
        "tokens_per_cpu_second": [_cpu_speed(r) for r in runs],
    }


def _length_stats(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    n = len(ordered)
    return {
        "rows": n,
        "min": ordered[0],
        "p10": ordered[n // 10],
        "median": ordered[n // 2],
        "p90": ordered[(9 * n) // 10],
        "max": ordered[-1],
        "mean": sum(ordered) / n,
    }


def run(
    *,
    small: bool = False,
    base: str | None = None,
    data: str = "mixed",
    repeats: int = 2,
    rows: int | None = None,
    threads: int | None = None,
    random_base: str | None = None,
    shape: str = DEFAULT_SHAPE,
    preload: bool = False,
) -> dict[str, Any]:
    if data not in DATA_SETS:
        raise ValueError(f"data={data!r}: use one of {', '.join(DATA_SETS)}")
    settings = _settings(small, rows)
    packing_sets = [data] + [d for d in DATA_SETS if d != data and data == "mixed"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        path, model = resolve_base(small, base, Path(tmp), random_base, shape)
        files = {d: write_data(d, settings["rows"][d], Path(tmp)) for d in packing_sets}
        decisions = {d: default_packing(files[d], path, settings) for d in packing_sets}
        default = decisions[data][0].packing
        spec = {"base": path, "base_path": path, "settings": settings, "threads": threads}
        measure_run = partial(measure, preload=preload)
        runs: dict[str, list[dict[str, Any]]] = {"bare": []}
        runs.update({f"{d}_{side}": [] for d in packing_sets for side in ("packed", "unpacked")})
        for _ in range(repeats):  # alternate so drifting load hits every side alike
            primary = {**spec, "data": str(files[data])}
            runs["bare"].append(measure_run("bare", {**primary, "packing": default}))
            for d in packing_sets:
                for packing in (default, not default) if d == data else (True, False):
                    side = f"{d}_{'packed' if packing else 'unpacked'}"
                    runs[side].append(
                        measure_run("loradock", {**spec, "data": str(files[d]), "packing": packing})
                    )
        short = {**spec, "data": str(files[packing_sets[-1]])}
        lora = measure_run("footprint", {**short, "packing": False, "quant": "none"})
        qlora = measure_run("footprint", {**short, "packing": False, "quant": "nf4"})
    ours = runs[f"{data}_{'packed' if default else 'unpacked'}"]
    packing_ratio = {
        d: _best(runs[f"{d}_packed"]) / _best(runs[f"{d}_unpacked"]) for d in packing_sets
    }
    ratios = {"loradock_vs_bare": _best(ours) / _best(runs["bare"])}
    ratios["packing_vs_no_packing"] = packing_ratio[data]
    ratios.update({f"packing_vs_no_packing_{d}": packing_ratio[d] for d in packing_sets[1:]})
    cpu_best = {side: max(_cpu_speed(r) for r in rs) for side, rs in runs.items()}
    return {
        "model": model,
        "gpu": _gpu_name(),
        "data": data,
        "settings": settings,
        "device": run_device(),
        "default_packing": {d: decisions[d][0].to_dict() for d in packing_sets},
        "bf16_autocast": bf16_autocast(),
        "ratios": ratios,
        "ratios_by_cpu_time": {
            "loradock_vs_bare": max(_cpu_speed(r) for r in ours) / cpu_best["bare"],
            **{
                f"packing_vs_no_packing_{d}": cpu_best[f"{d}_packed"] / cpu_best[f"{d}_unpacked"]
                for d in packing_sets
            },
        },
        "goals": GOALS,
        "meets_goals": {k: ratios[k] >= GOALS[k] for k in GOALS},
        "packing": {
            d: {
                "row_tokens": _length_stats(decisions[d][1]),
                "expected_padding_fraction": decisions[d][0].padding_fraction,
                "packed": _side(runs[f"{d}_packed"]),
                "unpacked": _side(runs[f"{d}_unpacked"]),
            }
            for d in packing_sets
        },
        "bare_trl": {
            "packing": default,
            "tokens": runs["bare"][0]["tokens"],
            "steps": runs["bare"][0]["steps"],
            "tokens_per_second": [r["tokens_per_second"] for r in runs["bare"]],
            "tokens_per_cpu_second": [_cpu_speed(r) for r in runs["bare"]],
        },
        "memory_mb": {
            "lora_peak_rss": lora["peak_rss_mb"],
            "qlora_peak_rss": qlora["peak_rss_mb"],
            "lora_model_footprint": lora["model_footprint_mb"],
            "qlora_model_footprint": qlora["model_footprint_mb"],
            **(
                {
                    "lora_peak_gpu": lora["peak_gpu_mb"],
                    "qlora_peak_gpu": qlora["peak_gpu_mb"],
                }
                if "peak_gpu_mb" in lora
                else {}
            ),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": threads or "default",
            "load_avg_1m_before": load_before,
            "load_avg_1m_after": os.getloadavg()[0],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny random model (smoke test)")
    parser.add_argument(
        "--shape",
        choices=TRAINING_SHAPES,
        default=DEFAULT_SHAPE,
        help="model shape (bench/model_shapes.py): SmolLM2's (its imported weights where the "
        "local hub has them, else random ones) or a 1B-class Llama (random weights)",
    )
    parser.add_argument("--base", default=None, help="a registry base instead of a shape")
    parser.add_argument(
        "--data",
        choices=DATA_SETS,
        default="mixed",
        help="rows for (a) and the packing figure: mixed (varied lengths; dates measured too) "
        "or dates (uniform ~103-token rows only)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=None, help="rows per epoch (one epoch a run)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (1 on a busy shared machine: 2 OpenMP threads then spin)",
    )
    parser.add_argument(
        "--random-base",
        default=None,
        metavar="FOLDER",
        help="random weights with this model folder's config and tokenizer (same speed as the "
        "real weights; for a machine that holds only the config)",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="fork each run from one process that imported the libraries once (smoke tests: "
        "faster; the default spawns each run from nothing)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"results file ({RESULTS})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(
        small=args.small,
        base=args.base,
        data=args.data,
        repeats=args.repeats,
        rows=args.rows,
        threads=args.threads,
        random_base=args.random_base,
        shape=args.shape,
        preload=args.preload,
    )
    device = "" if results["device"] == "cpu" else f"-{results['device']}"
    kind = "-small" if args.small else "" if args.shape == DEFAULT_SHAPE else f"-{args.shape}"
    default = RESULTS.with_name(f"training{kind}{device}.json")
    out = args.out or default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"model: {results['model']}  (results in {out})")
        for key, value in results["ratios"].items():
            goal = GOALS.get(key)
            mark = "" if goal is None else ("ok" if value >= goal else "BELOW GOAL")
            print(f"  {key:30s} {value:6.3f}   {f'goal >= {goal}' if goal else ''}  {mark}")
        for d, figures in results["packing"].items():
            for side in ("packed", "unpacked"):
                f = figures[side]
                print(
                    f"  {d:6s} {side:9s} {f['real_tokens']:6d} real / {f['computed_tokens']:6d} "
                    f"computed tokens ({f['padding_fraction']:.0%} padding), {f['steps']} steps, "
                    f"{max(f['tokens_per_second']):.1f} tokens/s"
                )
        for key, value in results["memory_mb"].items():
            print(f"  {key:30s} {value:8.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
