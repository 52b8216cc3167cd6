"""Metric functions the task YAMLs name with ``!function utils.<name>``.

lm-eval copies nothing: this file is loaded from the folder the YAMLs are read from, so the
run-time include folder (see ``loradock.evals.taskdir``) gets a copy beside the patched YAMLs.
It must stay importable on its own (standard library only).
"""

from __future__ import annotations

import json
import re
from typing import Any

# The fields the extraction task's fixed schema holds (as training/tasks.py defines them).
EXTRACTION_FIELDS = ("name", "city", "year")


def clean_reply(text: str) -> str:
    """A reply without surrounding whitespace: the only leniency the training metrics allow.

    These metrics mirror training/tasks.py exactly (evals may not import training code), so a
    score here means what it means in training's own validation.
    """
    return (text or "").strip()


def _iso(value: Any) -> str:
    # datasets' JSON reader (pyarrow) turns ISO date strings into timestamps: undo that.
    return value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else str(value)


def dates_docs(dataset: Any) -> Any:
    """The rows with ``answer`` as the ISO string the jsonl holds (see ``_iso``)."""
    return dataset.map(lambda doc: {"answer": str(doc["answer"])}, remove_columns=["answer"])


def process_dates(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": float(clean_reply(results[0]) == _iso(doc["answer"]))}


def parse_record(text: str) -> dict | None:
    try:
        value = json.loads(clean_reply(text))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _expected_record(answer: Any) -> dict:
    return answer if isinstance(answer, dict) else json.loads(answer)


def extraction_target(doc: dict) -> str:
    return json.dumps(_expected_record(doc["answer"]), ensure_ascii=False)


def process_extraction(doc: dict, results: list[str]) -> dict[str, float]:
    """Exact match of the parsed object, the share of schema fields right, and valid JSON."""
    expected = _expected_record(doc["answer"])
    predicted = parse_record(results[0])
    if predicted is None:
        return {"exact_match": 0.0, "field_accuracy": 0.0, "valid_json": 0.0}
    right = sum(predicted.get(key) == expected.get(key) for key in EXTRACTION_FIELDS)
    return {
        "exact_match": float(predicted == expected),
        "field_accuracy": right / len(EXTRACTION_FIELDS),
        "valid_json": 1.0,
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
