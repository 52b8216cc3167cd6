"""Training figures as ratios measured side by side in one run: ``python -m bench.training``.

(a) tokens/s of ``run_job`` (the ``loradock train`` path) / a bare trl ``SFTTrainer`` script
    with the same model, data and settings (goal >= 0.95)
(b) tokens/s with packing (bfd) / without, on short examples, same batch size (goal >= 1.5)
(c) peak resident memory of a LoRA and a QLoRA (NF4) run, and the model's own footprint

Every measurement runs in its own spawned process (so peak RSS is that run's alone); runs
alternate ours/bare and each figure keeps the best of ``--repeats`` (a shared machine's noise
only ever slows a run down). Tokens are non-padding input tokens (trainer's
``num_input_tokens_seen``) over the trainer's ``train_runtime``.

    python -m bench.training                      # SmolLM2-135M (needs the base imported)
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


def _settings(small: bool, steps: int | None) -> dict[str, Any]:
    return {
        "max_steps": steps or (8 if small else 12),
        "batch": 4,
        "max_length": 512 if small else 256,
        "lr": 2e-4,
        "rows": 96 if small else 400,
        "r": 8 if small else 16,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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
                "max_steps": s["max_steps"],
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
    started = time.perf_counter()
    result = run_job(job, progress=False)
    summary = result.metrics["train"]
    return {
        "tokens_per_second": summary["tokens_per_second"],
        "tokens": summary["num_input_tokens_seen"],
        "train_runtime": summary["train_runtime"],
        "wall_s": time.perf_counter() - started,
    }


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
        max_steps=s["max_steps"],
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
    tokens = int(trainer.state.num_input_tokens_seen)
    runtime = out.metrics["train_runtime"]
    return {"tokens_per_second": tokens / runtime, "tokens": tokens, "train_runtime": runtime}


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


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r["tokens_per_second"])


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
    *, small: bool = False, base: str | None = None, repeats: int = 2, steps: int | None = None
) -> dict[str, Any]:
    settings = _settings(small, steps)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        name, path = resolve_base(small, base, Path(tmp))
        spec = {"base": name, "base_path": path, "settings": settings, "packing": True}
        ours, bare = [], []
        for _ in range(repeats):  # alternate so drifting load hits both sides alike
            bare.append(measure("bare", spec))
            ours.append(measure("loradock", spec))
        no_pack = [measure("loradock", {**spec, "packing": False}) for _ in range(repeats)]
        lora = measure("footprint", {**spec, "quant": "none"})
        qlora = measure("footprint", {**spec, "quant": "nf4"})
    best_ours, best_bare, best_nopack = _best(ours), _best(bare), _best(no_pack)
    ratios = {
        "loradock_vs_bare": best_ours["tokens_per_second"] / best_bare["tokens_per_second"],
        "packing_vs_no_packing": best_ours["tokens_per_second"] / best_nopack["tokens_per_second"],
    }
    return {
        "model": "tiny (hidden 128, 2 layers)" if small else (base or REAL_BASE),
        "settings": settings,
        "bf16_autocast": _bf16(),
        "ratios": ratios,
        "goals": GOALS,
        "meets_goals": {k: ratios[k] >= GOALS[k] for k in GOALS},
        "tokens_per_second": {
            "loradock_packed": [r["tokens_per_second"] for r in ours],
            "bare_trl_packed": [r["tokens_per_second"] for r in bare],
            "loradock_unpacked": [r["tokens_per_second"] for r in no_pack],
        },
        "memory_mb": {
            "lora_peak_rss": lora["peak_rss_mb"],
            "qlora_peak_rss": qlora["peak_rss_mb"],
            "lora_model_footprint": lora["model_footprint_mb"],
            "qlora_model_footprint": qlora["model_footprint_mb"],
        },
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny random model (smoke test)")
    parser.add_argument("--base", default=None, help=f"registry base (default {REAL_BASE})")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help=f"results file ({RESULTS})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(small=args.small, base=args.base, repeats=args.repeats, steps=args.steps)
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
