"""Typed results: what lm-eval measured, per target, as flat metric records.

lm-eval's results dict keys metrics as ``"<metric>,<filter>"`` with ``"<metric>_stderr,<filter>"``
beside them (``"N/A"`` where no stderr exists). Here they become :class:`MetricResult` records
that the report plots and that become ``EvalMetric`` entries in a card.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loradock.evals.taskdir import TaskSpec

TargetKind = Literal["base", "adapter"]
# lm-eval's default filter name; other filters are reported as "<metric>@<filter>".
DEFAULT_FILTER = "none"


@dataclass(frozen=True)
class EvalTarget:
    """One model evaluated: the base, or an adapter on it (pinned to a commit sha)."""

    label: str  # unique within a run: "org/base" or "org/adapter@1a2b3c4"
    kind: TargetKind
    name: str  # as the user wrote it
    path: Path
    repo_id: str | None = None
    sha: str | None = None
    card: Any = field(default=None, repr=False, compare=False)

    @property
    def pinned_name(self) -> str | None:
        """``repo_id@sha``: the exact revision, as registries and servers accept it."""
        if self.repo_id is None:
            return None
        return f"{self.repo_id}@{self.sha}" if self.sha else self.repo_id


@dataclass(frozen=True)
class MetricResult:
    """One aggregated metric of one task for one target."""

    task: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool | None
    dataset: str
    dataset_revision: str | None
    kind: str  # the task's kind: "task", "general" or "perplexity"
    n_samples: int | None = None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"


@dataclass
class TargetResult:
    """Everything measured for one target: flat metrics, lm-eval's raw results, its samples."""

    target: EvalTarget
    metrics: list[MetricResult]
    raw: dict[str, Any] = field(repr=False)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def get(self, task: str, metric: str) -> MetricResult | None:
        return next((m for m in self.metrics if m.task == task and m.metric == metric), None)

    def by_key(self) -> dict[str, MetricResult]:
        return {m.key: m for m in self.metrics}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_revision(spec: TaskSpec) -> str:
    """A short content hash of the task's test data: which version of the data was measured."""
    path = spec.data_files.get(spec.config.get("test_split", "test"))
    return file_sha256(path)[:12] if path and path.is_file() else "unknown"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metrics_from_lm_eval(
    raw: Mapping[str, Any], specs: Mapping[str, TaskSpec]
) -> list[MetricResult]:
    """Flatten ``raw["results"]`` into records, in the order the tasks were asked for."""
    out: list[MetricResult] = []
    higher = raw.get("higher_is_better") or {}
    n_samples = raw.get("n-samples") or {}
    for task, values in (raw.get("results") or {}).items():
        spec = specs.get(task)
        if spec is None:
            continue
        revision = dataset_revision(spec)
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, _, filt = key.partition(",")
            number = _number(value)
            if number is None:
                continue
            name = metric if filt == DEFAULT_FILTER else f"{metric}@{filt}"
            out.append(
                MetricResult(
                    task=task,
                    metric=name,
                    value=number,
                    stderr=_number(values.get(f"{metric}_stderr,{filt}")),
                    higher_is_better=(higher.get(task) or {}).get(metric),
                    dataset=spec.dataset,
                    dataset_revision=revision,
                    kind=spec.kind,
                    n_samples=(n_samples.get(task) or {}).get("effective"),
                )
            )
    return out
