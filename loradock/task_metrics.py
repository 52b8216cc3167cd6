"""The shipped tasks' exact metrics, one home for training and evals alike (pure Python).

Training scores its held-out rows with them (``loradock.training.tasks``) and the lm-eval task
YAMLs score replies with them (``evals/tasks/utils.py``), so a figure means the same in a
job's card and in an eval report. Standard library only: lm-eval imports the task utilities
by file path, in whatever process runs it.
"""

from __future__ import annotations

import json

# The fields the extraction task's fixed schema holds.
EXTRACTION_FIELDS = ("name", "city", "year")


def clean_reply(text: str) -> str:
    """A model's reply without surrounding whitespace (the only leniency any metric allows)."""
    return text.strip()


def dates_exact_match(prediction: str, answer: str) -> float:
    """1.0 when the reply is exactly the ISO date, else 0.0."""
    return float(clean_reply(prediction) == answer)


def parse_record(text: str) -> dict | None:
    """The reply as a JSON object, or None when it is not one."""
    try:
        value = json.loads(clean_reply(text))
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def extraction_exact_match(prediction: str, answer: str) -> float:
    """1.0 when the reply parses as a JSON object equal to the expected one (key order ignored)."""
    parsed = parse_record(prediction)
    return float(parsed is not None and parsed == json.loads(answer))


def extraction_field_accuracy(prediction: str, answer: str) -> float:
    """The share of the schema's fields with the right value (0.0 when the reply is not JSON)."""
    parsed = parse_record(prediction)
    if parsed is None:
        return 0.0
    expected = json.loads(answer)
    return sum(parsed.get(k) == expected[k] for k in EXTRACTION_FIELDS) / len(EXTRACTION_FIELDS)
