"""One measured run of ``bench/training.py``, each in its own spawned process: ``run_job`` (the
``loradock train`` path), a bare trl ``SFTTrainer`` script with the same settings, or a short run
plus the model's memory footprint. Every side is instrumented through the same trl hooks (loop
CPU time, tokens handed to the model), and each reports its peak memory.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_device() -> str:
    from loradock.modeling import pick_device

    return str(pick_device())


def trl_rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {
            "prompt": [{"role": "user", "content": r["instruction"]}],
            "completion": [{"role": "assistant", "content": r["answer"]}],
        }
        for r in rows
    ]


def bf16_autocast() -> bool:
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
            "data": {"train": spec["data"]},
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
        **_LOOP,
    }


_LOOP: dict[str, float] = {}


def _instrument_training_loop() -> None:
    """Record the loop's process CPU time and the tokens the model is actually handed (padding
    included) through the same hooks for every side: ``SFTTrainer.train`` and trl's collator."""
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    train, collate = SFTTrainer.train, DataCollatorForLanguageModeling.torch_call
    _LOOP.update(computed_tokens=0, batches=0)

    def timed_train(self, *args, **kwargs):
        started = time.process_time()
        try:
            return train(self, *args, **kwargs)
        finally:
            _LOOP["cpu_s"] = time.process_time() - started

    def counted_collate(self, examples):
        batch = collate(self, examples)
        _LOOP["computed_tokens"] += batch["input_ids"].numel()
        _LOOP["batches"] += 1
        return batch

    SFTTrainer.train = timed_train
    DataCollatorForLanguageModeling.torch_call = counted_collate


def run_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """The same training as a bare trl script would write it: no loradock code in the loop."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    s = spec["settings"]
    ds = Dataset.from_list(trl_rows(Path(spec["data"])))
    bf16 = bf16_autocast()
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
    _instrument_training_loop()
    fn = {"loradock": run_loradock, "bare": run_bare, "footprint": run_footprint}[target]
    try:
        result = fn(spec)
        result["peak_rss_mb"] = _peak_rss_mb()
        import torch

        if torch.cuda.is_available():  # the memory that matters on a GPU is the device's
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        queue.put(result)
    except BaseException as exc:  # reported to the parent, which fails loudly
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


# What every run imports: a preloading fork server imports it once for all runs.
PRELOAD = ("torch", "transformers", "peft", "datasets", "trl", "loradock.training.job")


def _context(preload: bool):
    """Spawn (the bench's default): every run starts from nothing, as ``loradock train`` does.
    Preload: each run is still its own process, forked from a server that imported the
    libraries once, which spares a smoke test ~10 s of imports a run (peak RSS still counts
    those libraries, as a spawned run's does)."""
    if not preload:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD, __name__])
    return ctx


def measure(target: str, spec: dict[str, Any], *, preload: bool = False) -> dict[str, Any]:
    """Run one measurement in a fresh process and return its figures."""
    ctx = _context(preload)
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
