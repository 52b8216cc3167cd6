"""The SQL that writes one record into the index (the reads are in ``index_query.py``)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from loradock.registry.names import validate_alias
from loradock.registry.records import AdapterRecord, TaskVersion


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _version_row(version: TaskVersion | None) -> tuple[str | None, str | None, int | None]:
    v = version or TaskVersion()
    return v.version, v.config_hash, v.num_fewshot


def write_record(conn: sqlite3.Connection, rec: AdapterRecord) -> None:
    """Insert or replace one revision with its tasks, tags, metrics and aliases (inside the
    caller's transaction)."""
    repo_pk = conn.execute(
        "INSERT INTO repos (repo_id, private) VALUES (?, ?) ON CONFLICT (repo_id)"
        " DO UPDATE SET private = excluded.private RETURNING id",
        (rec.repo_id, int(rec.private)),
    ).fetchone()[0]
    rid = _upsert_revision(conn, repo_pk, rec)
    for table in ("revision_tasks", "revision_tags", "metrics", "stale_revisions"):
        conn.execute(f"DELETE FROM {table} WHERE revision_id = ?", (rid,))
    conn.executemany(
        "INSERT INTO revision_tasks (task, revision_id) VALUES (?, ?)",
        [(t, rid) for t in rec.tasks],
    )
    conn.executemany(
        "INSERT INTO revision_tags (tag, revision_id) VALUES (?, ?)",
        [(t, rid) for t in rec.tags],
    )
    conn.executemany(
        "INSERT INTO metrics (revision_id, key, value, task_version, task_hash,"
        " num_fewshot) VALUES (?, ?, ?, ?, ?, ?)",
        [(rid, k, v, *_version_row(rec.metric_versions.get(k))) for k, v in rec.metrics.items()],
    )
    if rec.is_latest:
        conn.execute(
            "UPDATE revisions SET is_latest = 0 WHERE repo_pk = ? AND is_latest = 1 AND id <> ?",
            (repo_pk, rid),
        )
    conn.executemany(
        "INSERT OR REPLACE INTO aliases (repo_pk, alias, sha) VALUES (?, ?, ?)",
        [(repo_pk, validate_alias(a), rec.sha) for a in rec.aliases],
    )


def _upsert_revision(conn: sqlite3.Connection, repo_pk: int, rec: AdapterRecord) -> int:
    """The revision's row, inserted or updated in place; returns its id."""
    return conn.execute(
        "INSERT INTO revisions (repo_pk, sha, kind, base_model, base_revision,"
        " peft_type, rank, alpha, target_modules, size_bytes, license, datasets,"
        " created_at, updated_at, is_latest)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (repo_pk, sha) DO UPDATE SET kind = excluded.kind,"
        " base_model = excluded.base_model, base_revision = excluded.base_revision,"
        " peft_type = excluded.peft_type, rank = excluded.rank,"
        " alpha = excluded.alpha, target_modules = excluded.target_modules,"
        " size_bytes = excluded.size_bytes, license = excluded.license,"
        " datasets = excluded.datasets, created_at = excluded.created_at,"
        " updated_at = excluded.updated_at, is_latest = excluded.is_latest"
        " RETURNING id",
        (
            repo_pk,
            rec.sha,
            rec.kind,
            rec.base_model,
            rec.base_revision,
            rec.peft_type,
            rec.rank,
            rec.alpha,
            json.dumps(list(rec.target_modules)),
            rec.size_bytes,
            rec.license,
            json.dumps(list(rec.datasets)),
            _iso(rec.created_at),
            _iso(rec.updated_at),
            int(rec.is_latest),
        ),
    ).fetchone()[0]
