"""The shipped tasks: where their data lives and which exact metrics score them.

The metrics themselves live in ``loradock.task_metrics`` (evals' task YAMLs use the same
functions); evals reads the jsonl files by path. Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loradock.task_metrics import (
    dates_exact_match,
    extraction_exact_match,
    extraction_field_accuracy,
)

DATA_DIR = Path(__file__).parent / "data"
SPLITS = ("train", "validation", "test")
Metric = Callable[[str, str], float]


@dataclass(frozen=True)
class TaskSpec:
    """One shipped task: its name, data folder and metrics."""

    name: str
    description: str
    metrics: dict[str, Metric]

    @property
    def data_dir(self) -> Path:
        return DATA_DIR / self.name

    def split_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return self.data_dir / f"{split}.jsonl"

    def score(self, predictions: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
        """Mean of every metric over paired predictions and answers."""
        if len(predictions) != len(answers):
            raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
        n = max(len(answers), 1)
        return {
            name: sum(fn(p, a) for p, a in zip(predictions, answers, strict=True)) / n
            for name, fn in self.metrics.items()
        }


TASKS: dict[str, TaskSpec] = {
    "dates": TaskSpec(
        name="dates",
        description="Normalise dates written in many ways into ISO YYYY-MM-DD.",
        metrics={"exact_match": dates_exact_match},
    ),
    "extraction": TaskSpec(
        name="extraction",
        description="Extract name, city and year from a short record into fixed-schema JSON.",
        metrics={
            "exact_match": extraction_exact_match,
            "field_accuracy": extraction_field_accuracy,
        },
    ),
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"Unknown task {name!r}: shipped tasks are {', '.join(TASKS)}") from None


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a jsonl file (``{"id", "instruction", "answer"}`` for the shipped tasks)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
