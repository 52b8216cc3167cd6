"""Evaluation results on a card: ``EvalMetric`` and its conversion to and from the Hub's
``model-index`` (huggingface_hub ``EvalResult``).

A card stores each metric as one ``model-index`` entry; loradock flattens it to
``EvalMetric`` and names it ``task/metric``, the key the index and search use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from huggingface_hub import EvalResult

from loradock.errors import CardError

LM_EVAL_SOURCE = "lm-evaluation-harness"
LM_EVAL_URL = "https://github.com/EleutherAI/lm-evaluation-harness"
# model-index's task.type: our tasks are all text generation on the Hub's taxonomy.
MODEL_INDEX_TASK_TYPE = "text-generation"


@dataclass(frozen=True)
class EvalMetric:
    """One metric of one evaluation: a ``model-index`` entry, flattened."""

    task: str
    dataset: str
    metric: str
    value: float
    stderr: float | None = None
    source: str = LM_EVAL_SOURCE
    dataset_revision: str | None = None
    # lm-eval's task version, a hash of the task config as run and its n-shot: two results
    # compare only when all three match (kept in model-index's metric args).
    task_version: str | None = None
    task_hash: str | None = None
    num_fewshot: int | None = None

    def __post_init__(self) -> None:
        # Ints and numpy scalars become plain floats so YAML round trips compare equal.
        for name in ("value", "stderr"):
            raw = getattr(self, name)
            if raw is None and name == "stderr":
                continue
            try:
                object.__setattr__(self, name, float(raw))
            except (TypeError, ValueError):
                raise CardError(
                    f"Eval metric {self.task}/{self.metric}: {name}={raw!r} is not a number."
                ) from None

    @property
    def key(self) -> str:
        """``task/metric``: the name the index and search use."""
        return f"{self.task}/{self.metric}"

    def problems(self) -> list[str]:
        out = []
        for name in ("task", "dataset", "metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                out.append(f"eval result {name}={getattr(self, name)!r} must be a non-empty string")
        if not math.isfinite(self.value):
            out.append(f"eval result {self.key} value={self.value!r} is not a finite number")
        if self.stderr is not None and not math.isfinite(self.stderr):
            out.append(f"eval result {self.key} stderr={self.stderr!r} is not a finite number")
        return out


def metric_problems(m: Any) -> list[str]:
    if not isinstance(m, EvalMetric):
        return [f"eval result {m!r} is not an EvalMetric"]
    return m.problems()


# EvalMetric fields stored in model-index's ``metric_args`` (beside ``stderr``).
METRIC_ARGS = ("stderr", "task_version", "task_hash", "num_fewshot")


def to_eval_result(m: EvalMetric) -> EvalResult:
    args = {k: getattr(m, k) for k in METRIC_ARGS if getattr(m, k) is not None}
    return EvalResult(
        task_type=MODEL_INDEX_TASK_TYPE,
        task_name=m.task,
        dataset_type=m.dataset,
        dataset_name=m.dataset,
        dataset_revision=m.dataset_revision,
        metric_type=m.metric,
        metric_value=m.value,
        metric_args=args or None,
        source_name=m.source,
        source_url=LM_EVAL_URL if m.source == LM_EVAL_SOURCE else f"urn:loradock:{m.source}",
    )


def from_eval_result(r: EvalResult) -> EvalMetric:
    args = r.metric_args if isinstance(r.metric_args, dict) else {}
    version, shots = args.get("task_version"), args.get("num_fewshot")
    try:
        return EvalMetric(
            task=r.task_name or r.task_type,
            dataset=r.dataset_type or r.dataset_name,
            metric=r.metric_type,
            value=r.metric_value,
            stderr=args.get("stderr"),
            source=r.source_name or LM_EVAL_SOURCE,
            dataset_revision=r.dataset_revision,
            task_version=None if version is None else str(version),
            task_hash=args.get("task_hash"),
            num_fewshot=shots if isinstance(shots, int) and not isinstance(shots, bool) else None,
        )
    except CardError as exc:
        raise CardError(f"Malformed model-index entry: {exc}") from None


__all__ = ["EvalMetric", "from_eval_result", "metric_problems", "to_eval_result"]
