"""Training figures as ratios measured side by side in one run: ``python -m bench.training``.

(a) tokens/s of ``run_job`` (the ``loradock train`` path) / a bare trl ``SFTTrainer`` script with
    the same model, data and settings (goal >= 0.95), both with the job default packing for this
    device (``packing: auto``)
(b) tokens/s with packing (bfd, padding-free) / without, on the short ``dates`` rows, same
    batch size (goal >= 1.5)
(c) peak resident memory of a LoRA and a QLoRA (NF4) run, and the model's own footprint

Fair by construction: every run trains ONE EPOCH OF THE SAME ROWS (packed runs take fewer,
fuller steps), so both sides process the same real tokens, counted from the prepared data set
(never padding); tokens/s = those tokens / the trainer's ``train_runtime`` (wall time of the
loop). The process CPU time of the same loop is recorded too: on a shared machine it is far
less disturbed by other jobs than wall time. Every measurement runs in its own spawned process
(so peak RSS is that run's alone); runs alternate between the compared sides and each figure
keeps the best of ``--repeats`` (a shared machine's noise only ever slows a run down).

    python -m bench.training --threads 1          # SmolLM2-135M (needs the base imported)
    python -m bench.training --small --json       # tiny random model: the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).parent / "results" / "training.json"
DATA = Path(__file__).resolve().parents[1] / "training" / "data" / "dates" / "train.jsonl"
REAL_BASE = "loradock/SmolLM2-135M-Instruct"
GOALS = {"loradock_vs_bare": 0.95, "packing_vs_no_packing": 1.5}


def _settings(small: bool, rows: int | None) -> dict[str, Any]:
    return {
        "rows": rows or (96 if small else 48),  # one epoch of these rows per run
        "batch": 4,
        "max_length": 512 if small else 256,
        "lr": 2e-4,
        "r": 8 if small else 16,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _device() -> str:
    from loradock.modeling import pick_device

    return str(pick_device())


def default_packing() -> bool:
    """What a job's ``packing: auto`` resolves to on this machine."""
    from loradock.training.config import TrainerSettings

    return TrainerSettings().packing_on(_device())


def _bf16() -> bool:
    import torch

    from loradock.modeling import pick_device, pick_dtype

    return pick_dtype(pick_device()) == torch.bfloat16


def run_loradock(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``run_job`` (eval and publish off: the training loop is what is compared)."""
    from loradock.training.config import JobConfig
    from loradock.training.job import run_job

    s = spec["settings"]
    job = JobConfig.from_dict(
        {
            "name": "bench",
            "base": {"name": spec["base"]},
            "data": {"train": str(DATA), "max_train_rows": s["rows"]},
            "lora": {"r": s["r"], "lora_alpha": 2 * s["r"], "target_modules": "all-linear"},
            "quantization": {"mode": spec.get("quant", "none")},
            "trainer": {
                "num_train_epochs": 1,
                "per_device_train_batch_size": s["batch"],
                "max_length": s["max_length"],
                "packing": spec["packing"],
                "learning_rate": s["lr"],
                "logging_steps": 1000,
                "save_steps": 100000,
            },
            "eval": {"enabled": False},
            "publish": {"enabled": False},
            "output_dir": spec["out"],
            "seed": 0,
        }
    )
    result = run_job(job, progress=False)
    summary = result.metrics["train"]
    return _figures(summary["epoch_tokens"], summary["train_runtime"], summary["global_step"])


def _figures(tokens: int, runtime: float, steps: int) -> dict[str, Any]:
    return {
        "tokens_per_second": tokens / runtime,
        "tokens": tokens,
        "steps": steps,
        "train_runtime": runtime,
        **_LOOP_CPU,
    }


_LOOP_CPU: dict[str, float] = {}


def _time_training_loop() -> None:
    """Record the process CPU time of ``SFTTrainer.train`` (the same hook for both sides)."""
    from trl import SFTTrainer

    original = SFTTrainer.train

    def train(self, *args, **kwargs):
        started = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            _LOOP_CPU["cpu_s"] = time.process_time() - started

    SFTTrainer.train = train


def run_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """The same training as a bare trl script would write it: no loradock code in the loop."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    s = spec["settings"]
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[: s["rows"]]]
    ds = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["instruction"]}],
                "completion": [{"role": "assistant", "content": r["answer"]}],
            }
            for r in rows
        ]
    )
    bf16 = _bf16()
    tokenizer = AutoTokenizer.from_pretrained(spec["base_path"])
    model = AutoModelForCausalLM.from_pretrained(spec["base_path"], dtype=torch.float32)
    args = SFTConfig(
        output_dir=spec["out"],
        num_train_epochs=1,
        per_device_train_batch_size=s["batch"],
        max_length=s["max_length"],
        packing=spec["packing"],
        packing_strategy="bfd",
        learning_rate=s["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        gradient_checkpointing=False,
        bf16=bf16,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        seed=0,
        data_seed=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=s["r"], lora_alpha=2 * s["r"], lora_dropout=0.05, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tokenizer,
        peft_config=peft_config,
    )  # fmt: skip
    out = trainer.train()
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])  # one epoch, real tokens
    return _figures(tokens, out.metrics["train_runtime"], trainer.state.global_step)


def run_footprint(spec: dict[str, Any]) -> dict[str, Any]:
    """A short run plus the loaded model's own memory footprint (LoRA vs QLoRA)."""
    from loradock.modeling import load_base

    quant = "nf4" if spec["quant"] == "nf4" else None
    model, _ = load_base(
        spec["base_path"], dtype="float32" if not quant else None, quantization=quant
    )
    footprint = model.get_memory_footprint() / 2**20
    del model
    result = run_loradock(spec)
    return {**result, "model_footprint_mb": footprint}


def _child(target: str, spec: dict[str, Any], queue) -> None:
    import logging

    logging.disable(logging.WARNING)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    _time_training_loop()
    fn = {"loradock": run_loradock, "bare": run_bare, "footprint": run_footprint}[target]
    try:
        result = fn(spec)
        result["peak_rss_mb"] = _peak_rss_mb()
        queue.put(result)
    except BaseException as exc:  # reported to the parent, which fails loudly
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def measure(target: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh spawned process and return its figures."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        spec = {**spec, "out": str(Path(tmp) / "out")}
        proc = ctx.Process(target=_child, args=(target, spec, queue))
        proc.start()
        result = queue.get()
        proc.join()
    if "error" in result:
        raise RuntimeError(f"bench run {target} failed: {result['error']}")
    return result


def _best(runs: list[dict[str, Any]], key: str = "tokens_per_second") -> float:
    return max(r[key] for r in runs)


def _cpu_speed(run: dict[str, Any]) -> float:
    return run["tokens"] / run["cpu_s"]


def resolve_base(small: bool, base: str | None, tmp: Path) -> tuple[str, str]:
    """(name for the job, folder for the bare script): a tiny model, or a registry base."""
    if small:
        from loradock.tiny import make_tiny_base

        path = make_tiny_base(tmp / "tiny-base", hidden_size=128, num_layers=2)
        return str(path), str(path)
    from loradock.registry.api import Registry

    resolved = Registry.open().resolve_base(base or REAL_BASE)
    return str(resolved.path), str(resolved.path)


def run(
    *,
    small: bool = False,
    base: str | None = None,
    repeats: int = 2,
    rows: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    settings = _settings(small, rows)
    default = default_packing()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        name, path = resolve_base(small, base, Path(tmp))
        spec = {"base": name, "base_path": path, "settings": settings, "packing": default}
        spec["threads"] = threads
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "packed": [], "unpacked": []}
        for _ in range(repeats):  # alternate so drifting load hits every side alike
            runs["bare"].append(measure("bare", spec))
            for packing in (default, not default):
                side = "packed" if packing else "unpacked"
                runs[side].append(measure("loradock", {**spec, "packing": packing}))
        lora = measure("footprint", {**spec, "quant": "none"})
        qlora = measure("footprint", {**spec, "quant": "nf4"})
    ours = runs["packed" if default else "unpacked"]
    ratios = {
        "loradock_vs_bare": _best(ours) / _best(runs["bare"]),
        "packing_vs_no_packing": _best(runs["packed"]) / _best(runs["unpacked"]),
    }
    cpu = {side: [_cpu_speed(r) for r in rs] for side, rs in runs.items()}
    return {
        "model": "tiny (hidden 128, 2 layers)" if small else (base or REAL_BASE),
        "settings": settings,
        "device": _device(),
        "default_packing": default,
        "bf16_autocast": _bf16(),
        "ratios": ratios,
        "ratios_by_cpu_time": {
            "loradock_vs_bare": max(cpu["packed" if default else "unpacked"]) / max(cpu["bare"]),
            "packing_vs_no_packing": max(cpu["packed"]) / max(cpu["unpacked"]),
        },
        "goals": GOALS,
        "meets_goals": {k: ratios[k] >= GOALS[k] for k in GOALS},
        "epoch_tokens": {side: rs[0]["tokens"] for side, rs in runs.items()},
        "steps_per_epoch": {side: rs[0]["steps"] for side, rs in runs.items()},
        "tokens_per_second": {
            f"loradock_{side}" if side != "bare" else "bare_trl": [
                r["tokens_per_second"] for r in rs
            ]
            for side, rs in runs.items()
        },
        "tokens_per_cpu_second": cpu,
        "memory_mb": {
            "lora_peak_rss": lora["peak_rss_mb"],
            "qlora_peak_rss": qlora["peak_rss_mb"],
            "lora_model_footprint": lora["model_footprint_mb"],
            "qlora_model_footprint": qlora["model_footprint_mb"],
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
    parser.add_argument("--base", default=None, help=f"registry base (default {REAL_BASE})")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=None, help="rows per epoch (one epoch a run)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (1 on a busy shared machine: 2 OpenMP threads then spin)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"results file ({RESULTS})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(
        small=args.small, base=args.base, repeats=args.repeats, rows=args.rows, threads=args.threads
    )
    out = args.out or (RESULTS.with_name("training-small.json") if args.small else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"model: {results['model']}  (results in {out})")
        for key, value in results["ratios"].items():
            mark = "ok" if results["meets_goals"][key] else "BELOW GOAL"
            print(f"  {key:24s} {value:6.3f}   goal >= {GOALS[key]}  {mark}")
        for key, value in results["memory_mb"].items():
            print(f"  {key:24s} {value:8.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
