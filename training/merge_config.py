"""``MergeConfig``: what ``loradock merge`` does, typed and checked when created.

Fields made with ``option()`` are also ``loradock merge`` options (``loradock/cli/merge.py``
builds each flag from the field's name, type, default and help text). Every problem of the
options is collected and raised as one ``ConfigError``; the problems that need the sources
themselves (bases, ranks) are checked by ``merge_sources.source_problems`` once they are
resolved, still before any weights load.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loradock.errors import ConfigError, InvalidNameError
from loradock.options import option
from loradock.registry.names import parse_name, validate_repo_id

# PEFT ``add_weighted_adapter`` combination types offered. ``cat`` and ``svd`` are exact (up
# to the SVD's rank) and take any ranks; the others combine A and B matrices element-wise,
# so PEFT needs every source at the same rank.
METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
EQUAL_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties")
# Used when a pruning method is given no --density: PEFT's examples keep half the values.
DEFAULT_DENSITY = 0.5
INTO = ("merge", "adapter")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class MergeConfig:
    """One merge: ``sources`` (``org/name[@rev]``, one or several adapters of one base)
    combined by ``method`` with ``weights`` and published ``into`` merged full weights or a
    new adapter."""

    sources: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    method: str = option(
        "linear", f"How several adapters combine (PEFT add_weighted_adapter): {', '.join(METHODS)}"
    )
    density: float | None = option(
        None,
        f"Fraction of each adapter's values kept, in (0, 1] ({', '.join(DENSITY_METHODS)} "
        f"only; {DEFAULT_DENSITY} when not given)",
    )
    into: str = option(
        "merge", "merge: full weights (base_model_relation: merge); adapter: a new adapter"
    )
    dtype: str = option("auto", f"Dtype of the merged weights: {', '.join(DTYPES)} (auto: base's)")
    repo_id: str | None = option(
        None,
        "Where to publish (default: <adapter>-merged; several: <first>-<method>-<into>)",
    )
    probe_rows: int = option(
        16, "Test prompts of each source's task the merged model is checked on"
    )
    max_new_tokens: int = option(32, "Greedy tokens generated per prompt by the check")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(self.weights))
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid merge options", problems)

    @property
    def several(self) -> bool:
        return len(self.sources) > 1

    @property
    def weights_used(self) -> tuple[float, ...]:
        """The weights given, or equal weights that sum to 1."""
        return self.weights or tuple(1.0 / len(self.sources) for _ in self.sources)

    @property
    def density_used(self) -> float | None:
        if self.method not in DENSITY_METHODS:
            return None
        return DEFAULT_DENSITY if self.density is None else self.density

    @property
    def target_repo(self) -> str:
        if self.repo_id:
            return self.repo_id
        first = parse_name(self.sources[0]).repo_id
        return f"{first}-{self.method}-{self.into}" if self.several else f"{first}-merged"

    def problems(self) -> list[str]:
        """Every reason these options cannot make a merge (empty when they can)."""
        problems = _name_problems(self.sources, self.repo_id)
        if self.method not in METHODS:
            problems.append(f"method={self.method!r} is not one of {', '.join(METHODS)}")
        if self.into not in INTO:
            problems.append(f"into={self.into!r} is not one of {', '.join(INTO)}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not self.several:
            problems += _single_source_problems(self)
        if self.into == "adapter":
            problems += _merge_only_problems(self)
        problems += weight_problems(self.weights, len(self.sources))
        problems += _density_problems(self.method, self.density)
        for name in ("probe_rows", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name}={value!r} must be an integer >= 1")
        return problems

    @classmethod
    def from_options(
        cls, sources: Sequence[str], weights: str | None = None, **options: Any
    ) -> MergeConfig:
        """The config from command-line values (``weights`` as ``"0.6,0.4"``); one
        ``ConfigError`` lists every problem, malformed weights included."""
        values, bad = _parse_weights(weights)
        try:
            config = cls(sources=tuple(sources), weights=values, **options)
        except ConfigError as exc:
            raise ConfigError("Invalid merge options", bad + exc.problems) from None
        if bad:
            raise ConfigError("Invalid merge options", bad)
        return config


def _parse_weights(text: str | None) -> tuple[tuple[float, ...] | None, list[str]]:
    """``"0.6,0.4"`` -> ``(0.6, 0.4)``, or ``None`` and the parts that are not numbers."""
    if text is None:
        return None, []
    values, bad = [], []
    for part in (p.strip() for p in text.split(",")):
        try:
            values.append(float(part))
        except ValueError:
            bad.append(f"weights={text!r}: {part!r} is not a number")
    return (None, bad) if bad else (tuple(values), [])


def weight_problems(weights: Sequence[float] | None, n_sources: int) -> list[str]:
    """Why ``weights`` cannot weigh ``n_sources`` adapters (all reasons at once)."""
    if weights is None:
        return []
    problems = []
    if len(weights) != n_sources:
        problems.append(
            f"weights has {len(weights)} value(s) for {n_sources} adapter(s): give one per adapter"
        )
    bad = [w for w in weights if not isinstance(w, int | float) or not math.isfinite(w)]
    if bad:
        problems.append(f"weights must be finite numbers, got {', '.join(map(repr, bad))}")
    elif weights and all(w == 0 for w in weights):
        problems.append("weights are all zero: the merge would drop every adapter")
    return problems


def _name_problems(sources: tuple[str, ...], repo_id: str | None) -> list[str]:
    problems = [] if sources else ["name at least one adapter to merge"]
    repos = []
    for name in sources:
        try:
            repos.append(parse_name(name).repo_id)
        except InvalidNameError as exc:
            problems.append(str(exc))
    repeated = sorted({r for r in repos if repos.count(r) > 1})
    if repeated:
        problems.append(f"adapters named more than once: {', '.join(repeated)}")
    if repo_id is not None:
        try:
            validate_repo_id(repo_id)
        except InvalidNameError as exc:
            problems.append(str(exc))
    return problems


def _single_source_problems(config: MergeConfig) -> list[str]:
    """Options that only mean something when several adapters are combined."""
    problems = []
    if config.weights is not None:
        problems.append("weights need two or more adapters (one adapter merges whole)")
    if config.method != "linear":
        problems.append(f"method={config.method!r} needs two or more adapters")
    if config.into == "adapter":
        problems.append("into='adapter' needs two or more adapters (one is an adapter already)")
    return problems


def _merge_only_problems(config: MergeConfig) -> list[str]:
    """Options of the merged weights and their check, given for a new adapter."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return [
        f"{name}={getattr(config, name)!r} applies to merged weights only (into='merge')"
        for name in ("dtype", "probe_rows", "max_new_tokens")
        if getattr(config, name) != defaults[name]
    ]


def _density_problems(method: str, density: float | None) -> list[str]:
    if density is None:
        return []
    if method not in DENSITY_METHODS:
        return [f"density is used by {', '.join(DENSITY_METHODS)} only, not method={method!r}"]
    if not isinstance(density, int | float) or not 0 < density <= 1:
        return [f"density={density!r} must be in (0, 1]"]
    return []
