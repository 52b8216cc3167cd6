"""The SQL behind the index's reads: validated search options -> one query that uses an index.

Every main query must cost about the same at 10k and at 100k revisions. So each query is
*driven* from one index that already holds rows in the order the query returns them, and
SQLite stops after ``LIMIT`` matches instead of sorting every match:

| filters given            | driven from                          | order                        |
|--------------------------|--------------------------------------|------------------------------|
| ``sort`` is a metric     | ``metrics (key, value)``             | that metric                  |
| ``metric`` (threshold)   | ``metrics (key, value)``, a range    | that metric                  |
| ``task``                 | ``revision_tasks (task, revision)``  | newest indexed first         |
| ``tag``                  | ``revision_tags (tag, revision)``    | newest indexed first         |
| ``base_model`` / nothing | ``revisions (kind, is_latest, base)``| newest indexed first         |

The other filters are checked per row by primary-key lookups. ``CROSS JOIN`` pins the join
order (SQLite never reorders it), so the planner cannot trade the ordered walk for a sort.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError
from loradock.registry.records import AdapterRecord, TaskVersion
from loradock.registry.search_query import SORT_FIELDS, SearchQuery

_CHUNK = 500  # ids per "IN (...)" list: far below SQLite's variable limit
_COLUMNS = (
    "r.id, p.repo_id, p.private, r.sha, r.kind, r.base_model, r.base_revision, r.peft_type, "
    "r.rank, r.alpha, r.target_modules, r.size_bytes, r.license, r.datasets, r.created_at, "
    "r.updated_at, r.is_latest, r.repo_pk"
)
# The filters that live in a table of their own: (query field, table, column).
_LISTED = (("task", "revision_tasks", "task"), ("tag", "revision_tags", "tag"))


def build_search_sql(q: SearchQuery) -> tuple[str, list[Any]]:
    """``(sql, params)`` selecting the matching revision ids in result order."""
    direction = "DESC" if q.descending else "ASC"
    where: list[str] = []
    driver_params: list[Any] = []
    done: set[str] = set()  # the filters the driving index already applies
    listed = [(getattr(q, field), table, column) for field, table, column in _LISTED]
    driver = next(((v, t, c) for v, t, c in listed if v is not None), None)

    if q.sort_metric is not None or q.metric is not None:
        key = q.sort_metric or q.metric
        source = "metrics d CROSS JOIN revisions r ON r.id = d.revision_id"
        where.append("d.key = ?")
        driver_params.append(key)
        if q.metric == key:
            done.add("metric")
            if q.min_value is not None:
                where.append("d.value >= ?")
                driver_params.append(q.min_value)
        order = f"d.value {direction}, d.revision_id {direction}"
    elif driver is not None:
        value, table, column = driver
        source = f"{table} d CROSS JOIN revisions r ON r.id = d.revision_id"
        where.append(f"d.{column} = ?")
        driver_params.append(value)
        done.add(table)
        order = f"d.revision_id {direction}"
    else:
        source = "revisions r"
        order = f"r.id {direction}"
    if q.sort in SORT_FIELDS:
        order = f"r.{q.sort} {direction}, r.id {direction}"

    row_where, params = _row_checks(q, done)
    where += row_where
    sql = f"SELECT r.id FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} LIMIT ?"
    return sql, [*driver_params, *params, q.limit]


def _row_checks(q: SearchQuery, done: set[str]) -> tuple[list[str], list[Any]]:
    """The filters the driving index does not apply, checked per row by primary-key lookups."""
    where: list[str] = []
    params: list[Any] = []
    if q.kind is not None:
        where.append("r.kind = ?")
        params.append(q.kind)
    if not q.all_revisions:
        where.append("r.is_latest = 1")
    if q.base_model is not None:
        where.append("r.base_model = ?")
        params.append(q.base_model)
    for field, table, column in _LISTED:
        value = getattr(q, field)
        if value is not None and table not in done:
            where.append(
                f"EXISTS (SELECT 1 FROM {table} x WHERE x.{column} = ? AND x.revision_id = r.id)"
            )
            params.append(value)
    if q.metric is not None and "metric" not in done:
        cond = "m.revision_id = r.id AND m.key = ?"
        params.append(q.metric)
        if q.min_value is not None:
            cond += " AND m.value >= ?"
            params.append(q.min_value)
        where.append(f"EXISTS (SELECT 1 FROM metrics m WHERE {cond})")
    return where, params


def build_compatible_sql(
    base_model: str, *, max_rank: int | None, limit: int | None
) -> tuple[str, list[Any]]:
    """Latest adapters on ``base_model``, rank at most ``max_rank``, highest rank first."""
    problems = []
    if not isinstance(base_model, str) or not base_model.strip():
        problems.append(f"base_model {base_model!r} must be a model id such as 'org/name'")
    if max_rank is not None and (
        isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank <= 0
    ):
        problems.append(f"max_rank {max_rank!r} must be a positive integer")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        problems.append(f"limit {limit!r} must be a positive integer (or None for all)")
    if problems:
        raise ConfigError("Invalid compatibility query", problems)
    sql = (
        "SELECT id FROM revisions INDEXED BY revisions_by_base_rank"
        " WHERE base_model = ? AND kind = 'adapter' AND is_latest = 1"
    )
    params: list[Any] = [base_model]
    if max_rank is not None:
        sql += " AND rank <= ?"
        params.append(max_rank)
    sql += " ORDER BY rank DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def load_records(conn: sqlite3.Connection, ids: list[int]) -> list[AdapterRecord]:
    """Full records for revision ids, in the order given (five queries, by primary keys)."""
    if not ids:
        return []
    rows: dict[int, tuple] = {}
    tasks: dict[int, list[str]] = {}
    tags: dict[int, list[str]] = {}
    metrics: dict[int, dict[str, float]] = {}
    versions: dict[int, dict[str, TaskVersion]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM revisions r JOIN repos p ON p.id = r.repo_pk"
            f" WHERE r.id IN ({marks})",
            chunk,
        ):
            rows[row[0]] = row
        for rid, task in conn.execute(
            f"SELECT revision_id, task FROM revision_tasks WHERE revision_id IN ({marks})",
            chunk,
        ):
            tasks.setdefault(rid, []).append(task)
        for rid, tag in conn.execute(
            f"SELECT revision_id, tag FROM revision_tags WHERE revision_id IN ({marks})", chunk
        ):
            tags.setdefault(rid, []).append(tag)
        for rid, key, value, *version in conn.execute(
            "SELECT revision_id, key, value, task_version, task_hash, num_fewshot FROM metrics"
            f" WHERE revision_id IN ({marks})",
            chunk,
        ):
            metrics.setdefault(rid, {})[key] = value
            versions.setdefault(rid, {})[key] = TaskVersion(*version)
    alias_of: dict[tuple[int, str], list[str]] = {}
    repo_pks = sorted({row[17] for row in rows.values()})
    for start in range(0, len(repo_pks), _CHUNK):
        chunk = repo_pks[start : start + _CHUNK]
        for repo_pk, alias, sha in conn.execute(
            "SELECT repo_pk, alias, sha FROM aliases"
            f" WHERE repo_pk IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            alias_of.setdefault((repo_pk, sha), []).append(alias)
    out = []
    for rid in ids:
        row = rows[rid]
        out.append(
            AdapterRecord(
                repo_id=row[1],
                private=bool(row[2]),
                sha=row[3],
                kind=row[4],
                base_model=row[5],
                base_revision=row[6],
                peft_type=row[7],
                rank=row[8],
                alpha=row[9],
                target_modules=tuple(json.loads(row[10])),
                size_bytes=row[11],
                license=row[12],
                datasets=tuple(json.loads(row[13])),
                created_at=datetime.fromisoformat(row[14]),
                updated_at=datetime.fromisoformat(row[15]),
                is_latest=bool(row[16]),
                tasks=tuple(sorted(tasks.get(rid, ()))),
                tags=tuple(sorted(tags.get(rid, ()))),
                metrics=metrics.get(rid, {}),
                metric_versions=versions.get(rid, {}),
                aliases=tuple(sorted(alias_of.get((row[17], row[3]), ()))),
            )
        )
    return out


@dataclass(frozen=True)
class IndexStats:
    path: Path
    schema_version: int
    repos: int
    revisions: int
    adapters: int  # latest revisions of adapter repos (what a search sees by default)
    bases: int
    merges: int
    aliases: int
    metrics: int


def read_stats(conn: sqlite3.Connection, path: Path) -> IndexStats:
    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    latest = "SELECT COUNT(*) FROM revisions WHERE is_latest = 1 AND kind = "
    return IndexStats(
        path=path,
        schema_version=one("SELECT COALESCE(MAX(version), 0) FROM schema_version"),
        repos=one("SELECT COUNT(*) FROM repos"),
        revisions=one("SELECT COUNT(*) FROM revisions"),
        adapters=one(latest + "'adapter'"),
        bases=one(latest + "'base'"),
        merges=one(latest + "'merge'"),
        aliases=one("SELECT COUNT(*) FROM aliases"),
        metrics=one("SELECT COUNT(*) FROM metrics"),
    )
