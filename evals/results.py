"""Typed results: what lm-eval measured, per target, as flat metric records.

lm-eval's results dict keys metrics as ``"<metric>,<filter>"`` with ``"<metric>_stderr,<filter>"``
beside them (``"N/A"`` where no stderr exists). Here they become :class:`MetricResult` records
that the report plots and that become ``EvalMetric`` entries in a card.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo

TargetKind = Literal["base", "adapter"]
# lm-eval's default filter name; other filters are reported as "<metric>@<filter>".
DEFAULT_FILTER = "none"
# " at 0x7f10c6251ee0>": the address in a Python repr.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


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
    # What makes two measurements comparable: lm-eval's task version, a hash of the task
    # configs as run (prompts, n-shot, generation arguments) and its data, and the n-shot.
    task_version: str | None = None
    task_hash: str | None = None
    num_fewshot: int | None = None

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


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _stable(value: Any) -> Any:
    """A JSON stand-in for what a config holds beyond JSON: a function by its name (its repr
    carries a memory address, different in every process)."""
    from lm_eval.utils import handle_non_serializable

    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    return handle_non_serializable(value)


def config_text(config: Mapping[str, Any]) -> str:
    """A task config as run, as text that is the same in every run that measures the same
    thing. Where the files lie is no part of the measurement (their content is in the data
    hash): the data files' paths and the YAML's own path (``metadata.config_source``) are left
    out."""
    config = dict(config)
    kwargs = dict(config.get("dataset_kwargs") or {})
    kwargs.pop("data_files", None)
    config["dataset_kwargs"] = kwargs
    metadata = dict(config.get("metadata") or {})
    metadata.pop("config_source", None)
    config["metadata"] = metadata
    text = json.dumps(config, sort_keys=True, default=_stable)
    return _ADDRESS.sub(">", text)  # reprs already turned into text by lm-eval


def task_identity(raw: Mapping[str, Any], info: TaskInfo) -> tuple[str | None, str, int | None]:
    """``(version, hash, n-shot)`` of one reported task (a group: over its leaf tasks)."""
    configs = raw.get("configs") or {}
    digest = hashlib.sha256(info.data_hash.encode())
    for leaf in sorted(info.leaves):
        digest.update(config_text(configs.get(leaf) or {}).encode())
    version = (raw.get("versions") or {}).get(info.name)
    shots = {(raw.get("n-shot") or {}).get(leaf) for leaf in info.leaves}
    n_shot = shots.pop() if len(shots) == 1 else None
    return (
        None if version is None else str(version),
        digest.hexdigest(),
        n_shot if isinstance(n_shot, int) else None,
    )


def metrics_from_lm_eval(
    raw: Mapping[str, Any], infos: Mapping[str, TaskInfo]
) -> list[MetricResult]:
    """Flatten ``raw["results"]`` of the reported tasks into records, in the order asked."""
    out: list[MetricResult] = []
    results = raw.get("results") or {}
    higher = raw.get("higher_is_better") or {}
    n_samples = raw.get("n-samples") or {}
    for name, info in infos.items():
        values = results.get(name) or {}
        version, task_hash, n_shot = task_identity(raw, info)
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, _, filt = key.partition(",")
            number = _number(value)
            if number is None:
                continue
            out.append(
                MetricResult(
                    task=name,
                    metric=metric if filt == DEFAULT_FILTER else f"{metric}@{filt}",
                    value=number,
                    stderr=_number(values.get(f"{metric}_stderr,{filt}")),
                    higher_is_better=(higher.get(name) or {}).get(metric),
                    dataset=info.dataset,
                    dataset_revision=info.data_hash[:12],
                    kind=info.kind,
                    n_samples=_effective(n_samples, info.leaves),
                    task_version=version,
                    task_hash=task_hash,
                    num_fewshot=n_shot,
                )
            )
    return out


def _effective(n_samples: Mapping[str, Any], leaves: tuple[str, ...]) -> int | None:
    counts = [(n_samples.get(leaf) or {}).get("effective") for leaf in leaves]
    return sum(counts) if counts and all(isinstance(c, int) for c in counts) else None
