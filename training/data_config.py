"""A job's data: a shipped task, local files or a Hub data set, and the rows' format."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from loradock.training.config_checks import check_positive, raise_problems

DATA_FORMATS = ("auto", "instruction", "messages", "prompt_completion", "text")
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
HUB_DATASET_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class DataConfig:
    """Where the rows come from and how they are shaped.

    ``task`` picks a shipped data set (``training/data/<task>/``); ``train``/``validation``/
    ``test`` override its files or name any local jsonl/json/csv/parquet file. ``hub_id`` is a
    Hub data set, only usable when a Hub is reachable. Formats: our ``instruction`` rows
    (``instruction``/``answer``), conversational ``messages``, ``prompt_completion`` or ``text``.
    """

    task: str | None = None
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    hub_id: str | None = None
    format: str = "auto"
    max_train_rows: int | None = None
    max_eval_rows: int | None = None

    def __post_init__(self) -> None:
        from loradock.training.tasks import TASKS

        problems = []
        if self.task is not None and self.task not in TASKS:
            problems.append(f"data.task={self.task!r} is not a shipped task ({', '.join(TASKS)})")
        if self.task is None and self.train is None and self.hub_id is None:
            problems.append("data: give a shipped `task`, a `train` file or a Hub `hub_id`")
        if self.hub_id is not None and not HUB_DATASET_RE.fullmatch(str(self.hub_id)):
            problems.append(f"data.hub_id={self.hub_id!r} is not a Hub data set id (org/name)")
        if self.format not in DATA_FORMATS:
            problems.append(f"data.format={self.format!r} is not one of {', '.join(DATA_FORMATS)}")
        for key in ("train", "validation", "test"):
            value = getattr(self, key)
            if value is not None and Path(value).suffix.lower() not in DATA_SUFFIXES:
                problems.append(
                    f"data.{key}={value!r}: unsupported file type; use {', '.join(DATA_SUFFIXES)}"
                )
        for key in ("max_train_rows", "max_eval_rows"):
            if getattr(self, key) is not None:
                check_positive(problems, f"data.{key}", getattr(self, key))
        raise_problems("data config", problems)

    def split_file(self, split: str) -> Path | None:
        """The local file for ``split``: the explicit one, else the shipped task's."""
        explicit = getattr(self, split)
        if explicit is not None:
            return Path(explicit)
        if self.task is not None:
            from loradock.training.tasks import get_task

            return get_task(self.task).split_path(split)
        return None
