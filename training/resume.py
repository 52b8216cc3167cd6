"""Which checkpoints a job may resume from: its own, complete ones.

A fresh run records what it trains (``checkpoints/job.json``: the job's name, seed, base,
data, LoRA, quantization and the trainer settings that shape the weights) and starts with
no ``checkpoint-*`` folder left from an earlier run. ``--resume`` compares the job with that
record and refuses, listing every difference, a checkpoint folder of another job or of other
settings; settings that only say how long to train or how often to save and log may change
(resuming a 4-step run as a 6-step one is the point). The checkpoint resumed is the newest
complete one: the trainer writes ``trainer_state.json`` last, so a process killed while saving
leaves a folder without it, which is skipped.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError
from loradock.training.preflight import JobPlan

log = logging.getLogger(__name__)

RECORD = "job.json"
COMPLETE_MARK = "trainer_state.json"
# Trainer settings that change how long a run goes or what it logs, not what it learns per step.
FREE_TRAINER_KEYS = frozenset(
    {
        "max_steps",
        "num_train_epochs",
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "eval_steps",
        "report_to",
    }
)
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def job_record(plan: JobPlan) -> dict[str, Any]:
    """What a checkpoint folder must have been trained with to be resumed by ``plan``."""
    config = plan.config.to_dict()
    trainer = {k: v for k, v in config["trainer"].items() if k not in FREE_TRAINER_KEYS}
    return {
        "name": config["name"],
        "seed": config["seed"],
        "base": {"model": plan.base_model_id, "revision": plan.base_revision},
        "data": config["data"],
        "lora": config["lora"],
        "quantization": config["quantization"],
        "trainer": trainer,
    }


def prepare_checkpoints(folder: Path, plan: JobPlan, *, resume: bool) -> str | None:
    """The checkpoint to resume from (``resume``), after checking it belongs to this job;
    for a fresh run, the folder emptied of old checkpoints and this job's record written."""
    record = job_record(plan)
    name = plan.config.name
    if not resume:
        for old in _checkpoints(folder):
            log.info("Fresh run of %s: removing the earlier %s", name, old.name)
            shutil.rmtree(old)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
        return None
    problems = _differences(folder, record)
    if problems:
        raise ConfigError(f"Cannot resume job {name!r} from {str(folder)!r}", problems)
    complete = [c for c in _checkpoints(folder) if (c / COMPLETE_MARK).is_file()]
    if not complete:
        raise ConfigError(
            f"Cannot resume job {name!r}",
            [
                f"no checkpoint-* folder holding {COMPLETE_MARK} in {str(folder)!r}: "
                "run without --resume first"
            ],
        )
    return str(complete[-1])


def _differences(folder: Path, record: dict[str, Any]) -> list[str]:
    try:
        recorded = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        if not _checkpoints(folder):
            return []  # nothing to resume: the "no checkpoint" error says so
        return [
            f"{RECORD} is missing: nothing says which job wrote these checkpoints; run without "
            "--resume to start over"
        ]
    except ValueError:
        return [f"{RECORD} is not valid JSON; run without --resume to start over"]
    if recorded.get("name") != record["name"]:
        return [
            f"the checkpoints belong to job {recorded.get('name')!r}, not {record['name']!r}: "
            "give this job its own output_dir, or run without --resume"
        ]
    now = _flat(json.loads(json.dumps(record, default=str)))
    then = _flat(recorded)
    return [
        f"{key}: checkpoints trained with {then.get(key)!r}, the job now says {now.get(key)!r}"
        for key in sorted(set(now) | set(then))
        if now.get(key) != then.get(key)
    ]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found) if p.is_dir()]


__all__ = ["FREE_TRAINER_KEYS", "job_record", "prepare_checkpoints"]
