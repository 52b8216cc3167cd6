"""The forgetting check and the comparability check, both against the base of one run.

An adapter forgets when it is worse than the base on a general-capability metric by more
than ``forgetting_sigmas`` combined standard errors (sqrt(se_base^2 + se_adapter^2)): a gap
inside the noise of the two measurements is not a regression, however large it looks on a
small test set. A metric lm-eval gives no stderr for (perplexities) is flagged beyond a
relative ``forgetting_threshold`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loradock.evals.results import MetricResult

if TYPE_CHECKING:
    from loradock.evals.run import EvalRun

FORGETTING_KINDS = ("general", "perplexity")
# The perplexity metric the forgetting check reads (scale-free, unlike word perplexity).
PERPLEXITY_METRIC = "bits_per_byte"


@dataclass(frozen=True)
class ForgettingCheck:
    """One adapter on one general-capability metric, against the base."""

    adapter: str
    task: str
    metric: str
    base_value: float
    value: float
    delta: float  # adapter - base, in the metric's own units
    relative: float | None  # delta / base, where the base is not zero
    flagged: bool
    # What a regression had to exceed: "2 stderr (0.0283)" or "5% relative (no stderr)".
    limit: str = ""


def _regression(m: MetricResult, ref: MetricResult, options) -> tuple[bool, str]:
    """Whether ``m`` is worse than ``ref`` beyond noise, and the limit it was held to."""
    worse = m.value - ref.value if m.higher_is_better is False else ref.value - m.value
    if m.stderr is not None and ref.stderr is not None:
        limit = options.forgetting_sigmas * math.sqrt(m.stderr**2 + ref.stderr**2)
        return worse > limit, f"{options.forgetting_sigmas:g} stderr ({limit:.4g})"
    threshold = options.forgetting_threshold
    flagged = bool(ref.value) and worse / abs(ref.value) > threshold
    return flagged, f"{threshold:.0%} relative (no stderr)"


def forgetting_checks(run: EvalRun) -> list[ForgettingCheck]:
    """Each adapter against the base on every general-capability metric (perplexity tasks:
    bits per byte only, the scale-free one)."""
    checks: list[ForgettingCheck] = []
    base = run.base.by_key()
    for adapter in run.adapters:
        for m in adapter.metrics:
            ref = base.get(m.key)
            if ref is None or m.kind not in FORGETTING_KINDS:
                continue
            if m.kind == "perplexity" and m.metric != PERPLEXITY_METRIC:
                continue
            flagged, limit = _regression(m, ref, run.options)
            delta = m.value - ref.value
            checks.append(
                ForgettingCheck(
                    adapter=adapter.target.label,
                    task=m.task,
                    metric=m.metric,
                    base_value=ref.value,
                    value=m.value,
                    delta=delta,
                    relative=delta / ref.value if ref.value else None,
                    flagged=flagged,
                    limit=limit,
                )
            )
    return checks


def version_mismatches(run: EvalRun) -> dict[str, list[str]]:
    """Per task, the targets measured on another version, config or n-shot than the base."""

    def identity(m: MetricResult | None) -> tuple:
        return (m.task_version, m.task_hash, m.num_fewshot) if m else ()

    out: dict[str, list[str]] = {}
    for info in run.tasks:
        first = next((m for m in run.base.metrics if m.task == info.name), None)
        for r in run.adapters:
            mine = next((m for m in r.metrics if m.task == info.name), None)
            if mine is not None and first is not None and identity(mine) != identity(first):
                out.setdefault(info.name, []).append(r.target.label)
    return out
