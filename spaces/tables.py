"""What the tabs display, computed from registry rows and arena standings (no Gradio here).

Kept apart from the layout so the numbers a reviewer sees are unit-testable: the
leaderboard's columns (task metric first, then general-capability metrics, then arena
Elo and win rate), its sorting, and the Browse tab's lineage summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

try:
    from .arena import Standing
    from .client import AdapterCardView, AdapterRow
    from .markup import md_code, md_text
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from arena import Standing  # type: ignore[no-redef]
    from client import AdapterCardView, AdapterRow  # type: ignore[no-redef]
    from markup import md_code, md_text  # type: ignore[no-redef]

EXAMPLES_PATH = Path(__file__).with_name("examples.json")
ARENA_COLUMNS = ["arena_elo", "arena_win_rate", "arena_games"]
DELTA_SUFFIX = " vs base"


def load_examples(path: Path = EXAMPLES_PATH) -> dict[str, list[str]]:
    """Example prompts per task (the Space cannot read training files once deployed)."""
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return {str(task): [str(p) for p in prompts] for task, prompts in data.items()}


def metric_columns(rows: Iterable[AdapterRow], task: str | None) -> tuple[list[str], list[str]]:
    """(task metric keys, other metric keys): the chosen task's metrics go first.

    Metrics of a task no row was trained for are general-capability checks (forgetting,
    perplexity), so they sit beside the task metric.
    """
    rows = list(rows)
    trained = {t for r in rows for t in r.tasks}
    keys = sorted({k for r in rows for k in r.metrics})
    if task:
        first = [k for k in keys if k.split("/", 1)[0] == task]
    else:
        first = [k for k in keys if k.split("/", 1)[0] in trained]
    general = [k for k in keys if k.split("/", 1)[0] not in trained and k not in first]
    rest = [k for k in keys if k not in first and k not in general]
    return first, general + rest


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
    when its own eval row is among ``rows``, each general-capability metric gets a
    "<metric> vs base" column beside it: a negative value there is forgetting.
    """
    task_cols, other_cols = metric_columns(rows, task)
    base_row = next((r for r in rows if r.kind == "base" and r.repo_id == base_model), None)
    deltas = {k: k + DELTA_SUFFIX for k in other_cols if base_row and k in base_row.metrics}
    by_model = {s.model: s for s in standings}
    records: list[dict[str, Any]] = []
    seen = set()
    for row in rows:
        seen.add(row.repo_id)
        record: dict[str, Any] = {
            "model": row.repo_id,
            "kind": row.kind,
            "base_model": row.base_model or "",
            "tasks": ", ".join(row.tasks),
        }
        for key in task_cols + other_cols:
            value = row.metrics.get(key)
            record[key] = None if value is None else round(value, 4)  # 0.30000000000000004
            if key in deltas and base_row is not None:
                record[deltas[key]] = (
                    None if value is None else round(value - base_row.metrics[key], 4)
                )
        records.append(_with_arena(record, by_model.get(row.repo_id)))
    for standing in standings:  # the base model, or adapters no longer in the index
        if standing.model not in seen:
            kind = "base" if standing.model == base_model else "arena only"
            record = {"model": standing.model, "kind": kind, "base_model": "", "tasks": ""}
            record.update({key: None for key in task_cols + other_cols})
            records.append(_with_arena(record, standing))
    general = [c for key in other_cols for c in (key, deltas.get(key)) if c]
    columns = ["model", "kind", "base_model", "tasks", *task_cols, *general, *ARENA_COLUMNS]
    return sort_frame(pd.DataFrame.from_records(records, columns=columns), sort_by, descending)


def sort_frame(frame: pd.DataFrame, sort_by: str | None, descending: bool = True) -> pd.DataFrame:
    """Sorted by one column, models without a value last (unknown column: order kept)."""
    if sort_by and sort_by in frame.columns:
        frame = frame.sort_values(
            sort_by, ascending=not descending, na_position="last", kind="stable"
        )
    return frame.reset_index(drop=True)


def _with_arena(record: dict[str, Any], standing: Standing | None) -> dict[str, Any]:
    record["arena_elo"] = round(standing.elo, 1) if standing else None
    record["arena_win_rate"] = round(standing.win_rate, 3) if standing else None
    record["arena_games"] = standing.games if standing else 0
    return record


def sortable_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("kind", "base_model", "tasks")]


def plot_frame(frame: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """The bar chart's data: one bar per model with a value for ``metric``."""
    if not metric or metric not in frame.columns or metric == "model":
        return pd.DataFrame({"model": [], "value": []})
    values = pd.to_numeric(frame[metric], errors="coerce")
    data = pd.DataFrame({"model": frame["model"], "value": values}).dropna()
    return data.reset_index(drop=True)


def default_metric(frame: pd.DataFrame, task: str | None) -> str:
    """The task's first metric when there is one, else arena Elo."""
    for col in frame.columns:
        if task and col.startswith(f"{task}/"):
            return col
    metrics = [c for c in frame.columns if "/" in c]
    return metrics[0] if metrics else "arena_elo"


def lineage_markdown(row: AdapterRow | None, card: AdapterCardView) -> str:
    """Where the adapter comes from: base + revision, data sets, training config.

    Every value comes from a card or an index row, so each is escaped (see markup.py).
    """
    lineage = dict(card.lineage)
    base = lineage.get("base_model") or (row.base_model if row else None) or "unknown"
    base_rev = lineage.get("base_revision") or (row.base_revision if row else None)
    datasets = lineage.get("datasets") or (list(row.datasets) if row else [])
    if isinstance(datasets, str):  # one data set written as a bare string
        datasets = [datasets]
    sha = card.sha or (row.sha if row else None) or "?"
    blocks = [
        f"**Adapter:** {md_code(card.repo_id)} at {md_code(sha)}",
        f"**Base model:** {md_code(base)}"
        + (f" @ {md_code(base_rev)}" if base_rev else " (revision not pinned)"),
        "**Data sets:** "
        + (", ".join(md_code(d) for d in datasets) if datasets else "not recorded"),
    ]
    if row and row.tasks:
        blocks.append("**Tasks:** " + ", ".join(md_text(t) for t in row.tasks))
    training = lineage.get("training")
    if isinstance(training, dict) and training:
        blocks.append(_table("Training config", training))
    shown = {"base_model", "base_revision", "datasets", "training", "revisions", "aliases"}
    others = {k: v for k, v in lineage.items() if k not in shown}
    if others:
        blocks.append(_table("Other lineage", others))
    return "\n\n".join(blocks)


def _table(title: str, values: dict[str, Any]) -> str:
    rows = [
        f"| {md_text(_short(k))} | {md_code(_short(v), in_table=True)} |" for k, v in values.items()
    ]
    return f"**{title}**\n\n| key | value |\n|---|---|\n" + "\n".join(rows)


def revisions_frame(row: AdapterRow | None, card: AdapterCardView) -> pd.DataFrame:
    """Each known revision with the aliases pointing at it (newest first as the server lists)."""
    lineage = card.lineage
    revisions = [
        str(r.get("sha", r)) if isinstance(r, dict) else str(r)
        for r in lineage.get("revisions") or ()
    ]
    aliases = lineage.get("aliases") or (row.aliases if row else {})
    if isinstance(aliases, list):
        aliases = {str(a): (row.sha if row else "") or "" for a in aliases}
    if not revisions and row:
        revisions = list(row.revisions) or ([row.sha] if row.sha else [])
    records = []
    for sha in revisions:
        names = [a for a, target in aliases.items() if target and target == sha]
        records.append({"revision": sha, "aliases": ", ".join(sorted(names))})
    for alias, target in aliases.items():  # aliases whose target the list did not include
        if not target or target not in revisions:
            records.append({"revision": target or "(unknown)", "aliases": alias})
    return pd.DataFrame.from_records(records, columns=["revision", "aliases"])


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
