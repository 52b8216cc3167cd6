"""The tiny training job and the probe prompt the training tests share."""

from __future__ import annotations

from pathlib import Path

TINY_BASE_ID = "local/tiny-base"  # what training/jobs/tiny.yaml names


def tiny_job(tmp_path: Path, **overrides) -> dict:
    """A job dict on the tiny model that trains in seconds; sections are merged with overrides."""
    job = {
        "name": "tiny",
        "base": {"name": TINY_BASE_ID},
        "data": {"task": "dates", "max_train_rows": 32, "max_eval_rows": 4},
        "lora": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
        "trainer": {
            "max_length": 512,
            "learning_rate": 1e-2,
            "max_steps": 6,
            "per_device_train_batch_size": 2,
            "logging_steps": 1,
            "save_steps": 3,
            "warmup_steps": 0,
            "lr_scheduler_type": "constant",
        },
        "eval": {"limit": 4, "max_new_tokens": 6, "batch_size": 4},
        "publish": {"repo_id": "acme/tiny-dates", "task": "dates"},
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(job.get(key), dict):
            job[key] = {**job[key], **value}
        else:
            job[key] = value
    return job


def probe_ids(tokenizer) -> list[int]:
    """One chat prompt's token ids: the input whose logits tests compare across reloads."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": "Date: 3rd of March 2024"}],
        add_generation_prompt=True,
        tokenize=True,
    )["input_ids"]
