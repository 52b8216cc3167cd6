"""``SearchQuery``: the one description of an index search, validated when it is made.

The CLI (``loradock registry search``), the server's ``GET /v1/registry/adapters`` and Python
callers all build one and hand it to :meth:`Registry.search` / :meth:`Index.search`, so the
filters, their defaults and their checks are written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loradock.errors import ConfigError
from loradock.registry.records import KINDS, validate_metric_key

MAX_LIMIT = 10_000
# Sorting by these reads every match (no index orders them); fine for the sizes people browse.
SORT_FIELDS = ("created_at", "updated_at", "rank", "size_bytes")


def _text_problem(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        return f"{name}={value!r} must be a non-empty string (or left out)"
    return None


@dataclass(frozen=True)
class SearchQuery:
    """Index rows matching every filter given (latest revision per repo unless
    ``all_revisions``). Creating one checks every option and raises one ``ConfigError``
    listing all the problems.

    ``sort`` is a metric key (``"dates/exact_match"``) or one of ``created_at``,
    ``updated_at``, ``rank``, ``size_bytes``; without it, rows come sorted by ``metric`` when
    one is given, else newest-indexed first. Sorting or filtering by a metric drops rows
    without it. ``kind=None`` searches every kind.
    """

    base_model: str | None = None
    task: str | None = None
    tag: str | None = None
    metric: str | None = None
    min_value: float | None = None
    sort: str | None = None
    descending: bool = True
    limit: int = 50
    kind: str | None = "adapter"
    all_revisions: bool = False

    def __post_init__(self) -> None:
        problems = [
            _text_problem("base_model", self.base_model),
            _text_problem("task", self.task),
            _text_problem("tag", self.tag),
            validate_metric_key(self.metric) if self.metric is not None else None,
            *self._min_value_problems(),
            self._sort_problem(),
            self._limit_problem(),
        ]
        if self.kind is not None and self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} must be one of {', '.join(KINDS)} (or None)")
        if any(problems):
            raise ConfigError("Invalid registry search", [p for p in problems if p])

    @property
    def sort_metric(self) -> str | None:
        """The metric key rows are sorted by, if ``sort`` names one."""
        return self.sort if self.sort is not None and self.sort not in SORT_FIELDS else None

    def _min_value_problems(self) -> list[str]:
        if self.min_value is None:
            return []
        problems = []
        try:
            value = float(self.min_value)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            # Stored as a float, so "0.5" from a form and 0.5 from Python compare alike.
            object.__setattr__(self, "min_value", value)
        else:
            problems.append(f"min_value={self.min_value!r} must be a finite number")
        if self.metric is None:
            problems.append(
                f"min_value={self.min_value!r} needs a metric to compare against "
                "(for example metric='dates/exact_match')"
            )
        return problems

    def _sort_problem(self) -> str | None:
        if self.sort is None or self.sort in SORT_FIELDS or not validate_metric_key(self.sort):
            return None
        return (
            f"sort={self.sort!r} is neither a metric key ('task/metric', for example "
            f"'dates/exact_match') nor one of {', '.join(SORT_FIELDS)}"
        )

    def _limit_problem(self) -> str | None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            return f"limit={self.limit!r} must be an integer from 1 to {MAX_LIMIT}"
        if not 1 <= self.limit <= MAX_LIMIT:
            return f"limit={self.limit!r} must be from 1 to {MAX_LIMIT}"
        return None
