"""One row of the index: an :class:`AdapterRecord` describes one commit of one repo.

Records are what the index stores and returns. They are built from what a store says about
a commit (``RepoInfo``), the commit's parsed card (``AdapterCard``) and, for adapters, the
PEFT config read from its files (``AdapterArtifact``), by :func:`record_from_repo`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from loradock.errors import ConfigError
from loradock.registry.card import TASK_TAG_PREFIX
from loradock.registry.names import REPO_ID_RE

if TYPE_CHECKING:
    from loradock.registry.artifact import AdapterArtifact
    from loradock.registry.card import AdapterCard
    from loradock.registry.store import RepoInfo

RecordKind = Literal["adapter", "base", "merge"]
KINDS: tuple[str, ...] = ("adapter", "base", "merge")

# "task/metric": both halves are identifiers lm-eval would print (dates/exact_match, mmlu/acc_norm).
METRIC_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._,-]*")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def validate_metric_key(key: str) -> str | None:
    """Return a problem description for a malformed metric key, or ``None`` if it is fine."""
    if not isinstance(key, str) or not METRIC_KEY_RE.fullmatch(key):
        return f"metric {key!r} is not of the form 'task/metric' (for example 'dates/exact_match')"
    return None


@dataclass(frozen=True)
class TaskVersion:
    """What one metric was measured on: lm-eval's task version, a hash of the task config as
    run (prompts, generation arguments, data) and the n-shot. Two values of a metric compare
    only when all three match; ``None`` where the card does not say."""

    version: str | None = None
    config_hash: str | None = None
    num_fewshot: int | None = None

    @property
    def recorded(self) -> bool:
        return any(v is not None for v in (self.version, self.config_hash, self.num_fewshot))

    @property
    def label(self) -> str:
        """``v3.0, 0-shot, config 1a2b3c4d`` (what the leaderboard shows)."""
        if not self.recorded:
            return "not recorded"
        parts = [f"v{self.version}" if self.version is not None else "version ?"]
        parts.append(f"{self.num_fewshot}-shot" if self.num_fewshot is not None else "?-shot")
        if self.config_hash:
            parts.append(f"config {self.config_hash[:8]}")
        return ", ".join(parts)


def as_utc(value: datetime | str | None) -> datetime:
    """Datetimes are stored in UTC; naive ones are taken to be UTC already."""
    if value is None:
        return _EPOCH
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _unique(values: Iterable[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    seen: dict[str, None] = {}
    for v in values:
        if v is not None and str(v) != "":
            seen.setdefault(str(v), None)
    return tuple(seen)


@dataclass(frozen=True)
class AdapterRecord:
    """What the index knows about one commit (``sha``) of one repo.

    ``kind`` says what the repo holds: a LoRA ``adapter``, a ``base`` model, or a ``merge``
    (an adapter merged into its base). ``metrics`` maps ``"task/metric"`` to a value, taken
    from the card's ``model-index``. ``aliases`` lists the aliases (Hub tags) pointing at
    this commit when the record was read; ``is_latest`` marks the head of ``main``.
    """

    repo_id: str
    sha: str
    kind: RecordKind = "adapter"
    base_model: str | None = None
    base_revision: str | None = None
    tasks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    peft_type: str | None = None
    rank: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    size_bytes: int = 0
    license: str | None = None
    datasets: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    # "task/metric" -> the task version it was measured on (only metrics whose card says).
    metric_versions: Mapping[str, TaskVersion] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    private: bool = False
    created_at: datetime = _EPOCH
    updated_at: datetime = _EPOCH
    is_latest: bool = False

    def __post_init__(self) -> None:
        # Normalise first (lists -> tuples, times -> UTC) so equal records compare equal.
        # tasks, tags and aliases are sets (stored as rows); modules and datasets keep order.
        for name in ("tasks", "tags", "aliases"):
            object.__setattr__(self, name, tuple(sorted(_unique(getattr(self, name)))))
        for name in ("target_modules", "datasets"):
            object.__setattr__(self, name, _unique(getattr(self, name)))
        object.__setattr__(self, "created_at", as_utc(self.created_at))
        object.__setattr__(self, "updated_at", as_utc(self.updated_at))
        problems: list[str] = []
        if not isinstance(self.repo_id, str) or not REPO_ID_RE.fullmatch(self.repo_id):
            problems.append(f"repo_id {self.repo_id!r} is not 'namespace/name'")
        if not isinstance(self.sha, str) or not self.sha:
            problems.append(f"sha {self.sha!r} is empty: a record names one commit")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "adapter" and not self.base_model:
            problems.append("an adapter record needs base_model (the card's 'base_model')")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank <= 0):
            problems.append(f"rank {self.rank!r} must be a positive integer")
        if not isinstance(self.size_bytes, int) or self.size_bytes < 0:
            problems.append(f"size_bytes {self.size_bytes!r} must be a non-negative integer")
        metrics: dict[str, float] = {}
        for key, value in dict(self.metrics or {}).items():
            problem = validate_metric_key(key)
            if problem:
                problems.append(problem)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                problems.append(f"metric {key!r} has a non-numeric value {value!r}")
                continue
            if not math.isfinite(number):
                problems.append(f"metric {key!r} has a non-finite value {value!r}")
                continue
            metrics[key] = number
        object.__setattr__(self, "metrics", metrics)
        versions: dict[str, TaskVersion] = {}
        for key, version in dict(self.metric_versions or {}).items():
            if not isinstance(version, TaskVersion) or key not in metrics:
                problems.append(f"metric_versions[{key!r}]={version!r}: not a measured metric's")
            elif version.recorded:
                versions[key] = version
        object.__setattr__(self, "metric_versions", versions)
        if problems:
            raise ConfigError(f"Invalid index record for {self.repo_id!r}@{self.sha!r}", problems)

    @property
    def name(self) -> str:
        """The pinned name of this revision: ``org/name@<sha>``."""
        return f"{self.repo_id}@{self.sha}"


def record_from_repo(
    info: RepoInfo, card: AdapterCard, artifact: AdapterArtifact | None
) -> AdapterRecord:
    """Build the record of one commit from the store's view, its card and its PEFT config.

    ``artifact`` is ``None`` for base and merged models (no PEFT files to read); the card's
    ``base_model_relation`` decides the kind. What the artifact knows for certain (rank,
    target modules, size) wins over anything the card claims.
    """
    kind = "adapter" if artifact is not None else card.kind
    base_model = card.base_model or (artifact.base_model if artifact is not None else None)
    # The card names one primary task; any other "task:<name>" tags count as tasks too.
    tasks = [card.task] if card.task else []
    tasks += [t[len(TASK_TAG_PREFIX) :] for t in card.tags if t.startswith(TASK_TAG_PREFIX)]
    if artifact is not None:
        size = int(artifact.size_bytes)
    else:
        size = sum(int(f.size or 0) for f in info.files)
    return AdapterRecord(
        repo_id=info.repo_id,
        sha=info.sha,
        kind=kind,  # type: ignore[arg-type]
        base_model=base_model,
        base_revision=card.base_revision,
        tasks=tuple(tasks),
        tags=(*card.tags, *info.tags),
        peft_type=(artifact.peft_type or None) if artifact is not None else None,
        # max_rank, not r: rank_pattern can raise some modules above r, and serving limits
        # (compatible_with(max_rank=...)) are about the largest one.
        rank=int(artifact.max_rank) if artifact is not None else None,
        alpha=float(artifact.alpha) if artifact is not None else None,
        target_modules=tuple(artifact.target_modules) if artifact is not None else (),
        size_bytes=size,
        license=card.license,
        datasets=card.datasets,
        metrics=card.metrics,
        metric_versions={
            m.key: TaskVersion(m.task_version, m.task_hash, m.num_fewshot)
            for m in card.eval_results
        },
        private=bool(info.private),
        created_at=as_utc(info.created_at or info.last_modified),
        updated_at=as_utc(info.last_modified or info.created_at),
        is_latest=False,
    )


def version_note(records: Sequence[AdapterRecord], metric: str) -> str | None:
    """A warning when the rows' values of ``metric`` were measured on different task
    versions, configs or n-shots (so ranking them compares unlike measurements), else None."""
    groups: dict[TaskVersion, list[str]] = {}
    for r in records:
        if metric in r.metrics:
            groups.setdefault(r.metric_versions.get(metric, TaskVersion()), []).append(r.repo_id)
    if len(groups) < 2:
        return None
    parts = [f"{v.label}: {', '.join(names)}" for v, names in groups.items()]
    return (
        f"{metric} was measured on different task versions, configs or n-shots "
        "(not comparable): " + "; ".join(parts)
    )
