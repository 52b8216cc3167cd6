"""What the Leaderboard shows, computed from registry rows and arena standings (no Gradio).

Kept apart from the layout so the numbers a reviewer sees are unit-testable: the
columns (each task's metrics together, then general-capability metrics, each followed by
its change against the base model's own row, then the arena's Bradley-Terry rating with
its 95% interval), the colours of those changes, sorting, the plot data and the CSV, and
what each metric was measured on (lm-eval's task version, n-shot and task config hash): a
change is only computed between values measured on the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

try:
    from .markup import md_code, md_text
    from .ratings import Standing
    from .records import AdapterRow
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from markup import md_code, md_text  # type: ignore[no-redef]
    from ratings import Standing  # type: ignore[no-redef]
    from records import AdapterRow  # type: ignore[no-redef]

ARENA_COLUMNS = ["arena_rating", "arena_95ci", "arena_win_rate", "arena_games"]
DELTA_SUFFIX = " vs base"
INFO_COLUMNS = ("kind", "base_model", "tasks", "arena_95ci")
BETTER, WORSE = "color: #15803d; font-weight: 600", "color: #b91c1c; font-weight: 600"
NOT_COMPARABLE = "color: #6b7280; font-style: italic"
# Metrics where a smaller value is the better one; a rise there is forgetting.
_LOWER_IS_BETTER = ("perplexity", "loss", "error", "wer", "cer")


def metric_columns(rows: Iterable[AdapterRow], task: str | None) -> tuple[list[str], list[str]]:
    """(task metric keys, other metric keys): the chosen task's metrics go first.

    Metrics of a task no row was trained for are general-capability checks (forgetting,
    perplexity), so they sit beside the task metric. Keys sort by task, so each task's
    metrics stay together under its name.
    """
    rows = list(rows)
    trained = {t for r in rows if r.kind != "base" for t in r.tasks}
    keys = sorted({k for r in rows for k in r.metrics})
    if task:
        first = [k for k in keys if k.split("/", 1)[0] == task]
    else:
        first = [k for k in keys if k.split("/", 1)[0] in trained]
    general = [k for k in keys if k.split("/", 1)[0] not in trained and k not in first]
    rest = [k for k in keys if k not in first and k not in general]
    return first, general + rest


def lower_is_better(metric: str) -> bool:
    name = metric.removesuffix(DELTA_SUFFIX).rsplit("/", 1)[-1].lower()
    return any(word in name for word in _LOWER_IS_BETTER)


def leaderboard_frame(
    rows: Sequence[AdapterRow],
    standings: Sequence[Standing],
    *,
    task: str | None = None,
    sort_by: str | None = None,
    descending: bool = True,
    base_model: str | None = None,
) -> pd.DataFrame:
    """One row per model: the rows given, plus any model that only played in the arena.

    ``base_model`` names the base being compared, so its arena record reads as "base";
    when its own eval row is among ``rows``, each metric it has gets a "<metric> vs base"
    column beside it: the adapter's value minus the base's, or, where the two were measured
    on a different task version, n-shot or config, what differs (``v2.0≠v1.0``: the row's,
    then the base's) instead of a number.
    """
    task_cols, other_cols = metric_columns(rows, task)
    base_row = next((r for r in rows if r.kind == "base" and r.repo_id == base_model), None)
    base_metrics = base_row.metrics if base_row else {}
    metrics = task_cols + other_cols
    deltas = {k: k + DELTA_SUFFIX for k in metrics if k in base_metrics}
    by_model = {s.model: s for s in standings}
    records: list[dict[str, Any]] = []
    for row in rows:
        record: dict[str, Any] = {
            "model": row.repo_id,
            "kind": row.kind,
            "base_model": row.base_model or "",
            "tasks": ", ".join(row.tasks),
        }
        for key in metrics:
            value = row.metrics.get(key)
            record[key] = None if value is None else round(value, 4)  # 0.30000000000000004
            if key in deltas and base_row is not None:
                record[deltas[key]] = _change(row, base_row, key)
        records.append(_with_arena(record, by_model.get(row.repo_id)))
    seen = {r.repo_id for r in rows}
    for standing in standings:  # the base model, or adapters no longer in the index
        if standing.model not in seen:
            kind = "base" if standing.model == base_model else "arena only"
            record = {"model": standing.model, "kind": kind, "base_model": "", "tasks": ""}
            record.update({key: None for key in metrics})
            records.append(_with_arena(record, standing))
    grouped = [c for key in metrics for c in (key, deltas.get(key)) if c]
    columns = ["model", "kind", "base_model", "tasks", *grouped, *ARENA_COLUMNS]
    return sort_frame(pd.DataFrame.from_records(records, columns=columns), sort_by, descending)


def _change(row: AdapterRow, base_row: AdapterRow, key: str) -> float | str | None:
    """The row's value of ``key`` minus the base's; what differs when they do not compare."""
    value = row.metrics.get(key)
    if value is None:
        return None
    differs = mismatch(measured_on(row, key), measured_on(base_row, key))
    return differs or round(value - base_row.metrics[key], 4)


def sort_frame(frame: pd.DataFrame, sort_by: str | None, descending: bool = True) -> pd.DataFrame:
    """Sorted by one column, models without a value last (unknown column: order kept).

    A change that could not be computed (measured on another task version) sorts with
    the unknown ones.
    """
    if sort_by and sort_by in frame.columns:
        numeric = sort_by.endswith(DELTA_SUFFIX)
        frame = frame.sort_values(
            sort_by,
            ascending=not descending,
            na_position="last",
            kind="stable",
            key=(lambda col: pd.to_numeric(col, errors="coerce")) if numeric else None,
        )
    return frame.reset_index(drop=True)


def _with_arena(record: dict[str, Any], standing: Standing | None) -> dict[str, Any]:
    record["arena_rating"] = round(standing.rating, 1) if standing else None
    record["arena_95ci"] = standing.interval() if standing else ""
    record["arena_win_rate"] = round(standing.win_rate, 3) if standing else None
    record["arena_games"] = standing.games if standing else 0
    return record


def delta_style(column: str, value: Any) -> str:
    """The colour of one "vs base" cell: green where the adapter beats the base, red where
    it falls behind (forgetting), grey where the two were measured on different task
    versions, none where equal or unknown."""
    if not column.endswith(DELTA_SUFFIX):
        return ""
    if isinstance(value, str):
        return NOT_COMPARABLE
    if value is None or pd.isna(value) or value == 0:
        return ""
    better = value < 0 if lower_is_better(column) else value > 0
    return BETTER if better else WORSE


def styled(frame: pd.DataFrame) -> Any:
    """The frame with its "vs base" cells coloured (a pandas Styler, as gr.Dataframe takes)."""
    styler = frame.style
    for column in (c for c in frame.columns if c.endswith(DELTA_SUFFIX)):
        styler = styler.map(lambda v, c=column: delta_style(c, v), subset=[column])
    return styler.format(_shown)


def _shown(value: Any) -> str:
    """A cell as text: numbers without trailing zeros (0.3, not 0.300000), blanks for unknown."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def leaderboard_csv(frame: pd.DataFrame) -> str:
    """The table as CSV text, the columns as shown, empty cells for unknown values."""
    return frame.to_csv(index=False, lineterminator="\n")


def sortable_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in INFO_COLUMNS]


def plot_frame(frame: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """The bar chart's data: one bar per model with a value for ``metric``."""
    if not metric or metric not in frame.columns or metric == "model":
        return pd.DataFrame({"model": [], "value": []})
    values = pd.to_numeric(frame[metric], errors="coerce")
    data = pd.DataFrame({"model": frame["model"], "value": values}).dropna()
    return data.reset_index(drop=True)


def default_metric(frame: pd.DataFrame, task: str | None) -> str:
    """The task's first metric when there is one, else the arena rating."""
    for col in frame.columns:
        if task and col.startswith(f"{task}/") and not col.endswith(DELTA_SUFFIX):
            return col
    metrics = [c for c in frame.columns if "/" in c and not c.endswith(DELTA_SUFFIX)]
    return metrics[0] if metrics else "arena_rating"


# -- what each value was measured on ----------------------------------------------------------


@dataclass(frozen=True)
class MeasuredOn:
    """One metric value's task version, n-shot and task config hash (the index's
    ``metric_versions`` entry); ``None`` where the card does not say."""

    version: str | None = None
    config_hash: str | None = None
    num_fewshot: int | None = None

    @property
    def label(self) -> str:
        """``v1.0, 0-shot, config 1a2b3c4d``, as ``loradock registry search`` prints it."""
        parts = [f"v{self.version}" if self.version is not None else "version ?"]
        parts.append(f"{self.num_fewshot}-shot" if self.num_fewshot is not None else "?-shot")
        if self.config_hash:
            parts.append(f"config {self.config_hash[:8]}")
        return ", ".join(parts)


def measured_on(row: AdapterRow, key: str) -> MeasuredOn | None:
    """What ``row``'s value of ``key`` was measured on; None where the row does not say (a
    card without versions, or a server that does not send them)."""
    versions = row.extra.get("metric_versions")
    entry = versions.get(key) if isinstance(versions, dict) else None
    if not isinstance(entry, dict):
        return None
    version, config, shots = (entry.get(k) for k in ("version", "config_hash", "num_fewshot"))
    found = MeasuredOn(
        version=None if version is None else str(version),
        config_hash=config if isinstance(config, str) and config else None,
        num_fewshot=shots if isinstance(shots, int) and not isinstance(shots, bool) else None,
    )
    return found if found != MeasuredOn() else None


_SHOWN = (
    ("version", lambda v: f"v{v}"),
    ("num_fewshot", lambda n: f"{n}-shot"),
    ("config_hash", lambda h: f"config {h[:8]}"),
)


def mismatch(row: MeasuredOn | None, base: MeasuredOn | None) -> str | None:
    """``v2.0≠v1.0`` (or the n-shot or config, when the version is the same) when both
    say and differ, else None: what one side does not record cannot show a difference."""
    if row is None or base is None:
        return None
    for name, shown in _SHOWN:
        mine, theirs = getattr(row, name), getattr(base, name)
        if mine is not None and theirs is not None and mine != theirs:
            return f"{shown(mine)}≠{shown(theirs)}"
    return None


# (what a metric was measured on, the models measured so), one entry per distinct label.
Groups = tuple[tuple[str, tuple[str, ...]], ...]
UNSAID = "not recorded"


def _groups(rows: Sequence[AdapterRow], key: str) -> Groups:
    """(what it was measured on, the models measured so) for every row with a value."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if key in row.metrics:
            on = measured_on(row, key)
            groups.setdefault(on.label if on else UNSAID, []).append(row.repo_id)
    return tuple((label, tuple(models)) for label, models in groups.items())


def version_caption(rows: Sequence[AdapterRow], frame: pd.DataFrame) -> str:
    """Markdown for under the table: each task's version, n-shot and config, the models on
    each when rows differ, and what a ``≠`` in a "vs base" column means. Metrics no row
    records it for (an older server, training's own held-out figures) are left out; empty
    when that is all of them."""
    keys = [c for c in frame.columns if "/" in c and not c.endswith(DELTA_SUFFIX)]
    every = {k: _groups(rows, k) for k in keys}
    said = {k: g for k, g in every.items() if any(label != UNSAID for label, _ in g)}
    named: dict[str, Groups] = {}  # by task, or by metric where a task's metrics differ
    for task in dict.fromkeys(k.split("/", 1)[0] for k in said):
        groups = {k: g for k, g in said.items() if k.split("/", 1)[0] == task}
        if len(set(groups.values())) == 1:
            named[task] = next(iter(groups.values()))
        else:
            named.update(groups)
    parts = []
    for name, groups in named.items():
        if len(groups) == 1:
            parts.append(f"{md_code(name)} {md_text(groups[0][0])}")
            continue
        each = "; ".join(
            f"{md_text(label)} ({', '.join(md_code(m) for m in models)})"
            for label, models in groups
        )
        recorded = [label for label, _ in groups if label != UNSAID]
        verdict = " differs between rows (not comparable):" if len(recorded) > 1 else ":"
        parts.append(f"{md_code(name)}{verdict} {each}")
    if not parts:
        return ""
    caption = "Measured on: " + " · ".join(parts)
    refused = any(
        isinstance(v, str) for c in frame.columns if c.endswith(DELTA_SUFFIX) for v in frame[c]
    )
    if refused:
        caption += (
            "\n\nA “vs base” cell such as `v2.0≠v1.0` (the row's, then the base's task "
            "version, n-shot or config) marks values measured differently: no change is "
            "computed there."
        )
    return caption
