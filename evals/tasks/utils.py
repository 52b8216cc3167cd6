"""Functions the task YAMLs name with ``!function utils.<name>``: lm-eval's side of the tasks.

lm-eval loads this file by path from the folder the YAMLs are read from (the run-time include
folder gets a copy beside the patched YAMLs, see ``loradock.evals.taskdir``). The scores
themselves are ``loradock.task_metrics``, the functions training's held-out eval uses, so a
score here means what it means in a job's own validation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from loradock.task_metrics import (
    dates_exact_match,
    extraction_exact_match,
    extraction_field_accuracy,
    parse_record,
)

# datasets' builder for each data file suffix the shipped tasks use.
BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text"}


def local_dataset(
    data_files: dict[str, str], sample_by: str | None = None, **_metadata: Any
) -> Any:
    """The task's data, read with paths relative to this folder (absolute ones kept).

    lm-eval calls this (``custom_dataset``) with the YAML's ``metadata`` and ``dataset_kwargs``
    as keywords; only the data keys matter here.
    """
    import datasets

    here = Path(__file__).parent
    files = {split: str((here / path).resolve()) for split, path in data_files.items()}
    suffixes = {Path(f).suffix for f in files.values()}
    if len(suffixes) != 1 or next(iter(suffixes)) not in BUILDERS:
        raise ValueError(f"data_files {files} must share one suffix of {sorted(BUILDERS)}")
    kwargs = {"sample_by": sample_by} if sample_by else {}
    return datasets.load_dataset(BUILDERS[suffixes.pop()], data_files=files, **kwargs)


def _iso(value: Any) -> str:
    # datasets' JSON reader (pyarrow) turns ISO date strings into timestamps: undo that.
    return value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else str(value)


def dates_docs(dataset: Any) -> Any:
    """The rows with ``answer`` as the ISO string the jsonl holds (see ``_iso``)."""
    return dataset.map(lambda doc: {"answer": str(doc["answer"])}, remove_columns=["answer"])


def process_dates(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": dates_exact_match(results[0], _iso(doc["answer"]))}


def extraction_target(doc: dict) -> str:
    """The expected JSON object as text (the jsonl holds it as a string or, once read by
    datasets, possibly as a mapping)."""
    answer = doc["answer"]
    return json.dumps(
        answer if isinstance(answer, dict) else json.loads(answer), ensure_ascii=False
    )


def process_extraction(doc: dict, results: list[str]) -> dict[str, float]:
    """Exact match of the parsed object, the share of schema fields right, and valid JSON."""
    answer, reply = extraction_target(doc), results[0]
    return {
        "exact_match": extraction_exact_match(reply, answer),
        "field_accuracy": extraction_field_accuracy(reply, answer),
        "valid_json": float(parse_record(reply) is not None),
    }


def perplexity_target(doc: dict) -> str:
    return doc["text"].strip()


def process_perplexity(doc: dict, results: list[float]) -> dict[str, tuple[float, int]]:
    (loglikelihood,) = results
    text = doc["text"].strip()
    words = len(re.split(r"\s+", text))
    size = len(text.encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, size),
        "bits_per_byte": (loglikelihood, size),
    }
