"""The shipped tasks: where their data lives and their exact metrics (pure Python).

evals reads the jsonl files by path and may copy these few functions into its own task
utilities; nothing here imports torch or any other part of loradock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
SPLITS = ("train", "validation", "test")
EXTRACTION_FIELDS = ("name", "city", "year")

Metric = Callable[[str, str], float]


def clean_reply(text: str) -> str:
    """A model's reply without surrounding whitespace (the only leniency any metric allows)."""
    return text.strip()


def dates_exact_match(prediction: str, answer: str) -> float:
    """1.0 when the reply is exactly the ISO date, else 0.0."""
    return float(clean_reply(prediction) == answer)


def _parse_record(text: str) -> dict | None:
    try:
        value = json.loads(clean_reply(text))
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def extraction_exact_match(prediction: str, answer: str) -> float:
    """1.0 when the reply parses as a JSON object equal to the expected one (key order ignored)."""
    parsed = _parse_record(prediction)
    return float(parsed is not None and parsed == json.loads(answer))


def extraction_field_accuracy(prediction: str, answer: str) -> float:
    """The share of the schema's fields with the right value (0.0 when the reply is not JSON)."""
    parsed = _parse_record(prediction)
    if parsed is None:
        return 0.0
    expected = json.loads(answer)
    return sum(parsed.get(k) == expected[k] for k in EXTRACTION_FIELDS) / len(EXTRACTION_FIELDS)


@dataclass(frozen=True)
class TaskSpec:
    """One shipped task: its name, data folder and metrics (the first one is the headline)."""

    name: str
    description: str
    metrics: dict[str, Metric]

    @property
    def data_dir(self) -> Path:
        return DATA_DIR / self.name

    @property
    def primary_metric(self) -> str:
        return next(iter(self.metrics))

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
