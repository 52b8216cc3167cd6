"""The index's schema, as numbered migrations applied in order when an index is opened.

Each migration runs once, inside the same transaction that records its number in
``schema_version``, so a crash midway leaves the previous schema intact. Never edit a
migration that has shipped: append a new one (an index file outlives the code that wrote it).

Why the schema looks the way it does: every main query must cost about the same at 10k and
at 100k revisions, so each one has an index it can walk in the order it returns rows and stop
after ``LIMIT`` rows (see ``registry/index.py`` for which query drives from which index).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from loradock.errors import ConfigError


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


_V1_INITIAL = """
CREATE TABLE repos (
    id       INTEGER PRIMARY KEY,
    repo_id  TEXT NOT NULL UNIQUE,
    private  INTEGER NOT NULL DEFAULT 0
);

-- One row per indexed commit of a repo; the content of a commit never changes.
CREATE TABLE revisions (
    id             INTEGER PRIMARY KEY,
    repo_pk        INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    sha            TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('adapter', 'base', 'merge')),
    base_model     TEXT,
    base_revision  TEXT,
    peft_type      TEXT,
    rank           INTEGER,
    alpha          REAL,
    target_modules TEXT NOT NULL DEFAULT '[]',  -- JSON list: only ever read, never queried
    size_bytes     INTEGER NOT NULL DEFAULT 0,
    license        TEXT,
    datasets       TEXT NOT NULL DEFAULT '[]',  -- JSON list
    created_at     TEXT NOT NULL,               -- ISO 8601, UTC
    updated_at     TEXT NOT NULL,
    is_latest      INTEGER NOT NULL DEFAULT 0,  -- 1 on the commit at the head of main
    UNIQUE (repo_pk, sha)
);
-- Rows come back newest-indexed first; the rowid ends every index entry, so these
-- indexes also hand rows over in that order ("by base", "everything", "compatible").
CREATE INDEX revisions_by_kind ON revisions (kind, is_latest);
CREATE INDEX revisions_by_kind_base ON revisions (kind, is_latest, base_model);
CREATE INDEX revisions_by_base_rank ON revisions (base_model, kind, is_latest, rank);

CREATE TABLE revision_tasks (
    task        TEXT NOT NULL,
    revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,
    PRIMARY KEY (task, revision_id)
) WITHOUT ROWID;
CREATE INDEX revision_tasks_by_revision ON revision_tasks (revision_id);

CREATE TABLE revision_tags (
    tag         TEXT NOT NULL,
    revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,
    PRIMARY KEY (tag, revision_id)
) WITHOUT ROWID;
CREATE INDEX revision_tags_by_revision ON revision_tags (revision_id);

-- key is "task/metric", e.g. "dates/exact_match".
CREATE TABLE metrics (
    revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       REAL NOT NULL,
    PRIMARY KEY (revision_id, key)
) WITHOUT ROWID;
-- "best for task T" and "metric >= x" walk this index from the top and stop at LIMIT.
CREATE INDEX metrics_by_key_value ON metrics (key, value, revision_id);

-- Aliases are Hub tags: they name a commit sha, which may be indexed later than the tag.
CREATE TABLE aliases (
    repo_pk INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    alias   TEXT NOT NULL,
    sha     TEXT NOT NULL,
    PRIMARY KEY (repo_pk, alias)
) WITHOUT ROWID;
"""

_V2_TASK_VERSIONS = """
-- What each metric was measured on (lm-eval's task version, config hash, n-shot): two
-- values of a metric compare only when all three match. NULL where the card does not say.
ALTER TABLE metrics ADD COLUMN task_version TEXT;
ALTER TABLE metrics ADD COLUMN task_hash TEXT;
ALTER TABLE metrics ADD COLUMN num_fewshot INTEGER;

-- Revisions whose card the next sync reads again (their rows stay readable meanwhile):
-- the ones indexed with metrics before the columns above existed.
CREATE TABLE stale_revisions (
    revision_id INTEGER PRIMARY KEY REFERENCES revisions(id) ON DELETE CASCADE
);
INSERT INTO stale_revisions (revision_id) SELECT DISTINCT revision_id FROM metrics;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1_INITIAL),
    Migration(2, "task versions of metrics", _V2_TASK_VERSIONS),
)


def latest_version(migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    return max((m.version for m in migrations), default=0)


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def split_statements(script: str) -> list[str]:
    """A migration's statements, one by one (comments may hold ';')."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"Incomplete SQL statement in a migration: {leftover[0][:80]!r}")
    return statements


def apply_migrations(
    conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS, *, where: str
) -> list[int]:
    """Apply the migrations newer than the file's version, in order; returns their numbers.

    Runs inside the caller's transaction (``BEGIN IMMEDIATE``): a second process opening the
    same file waits, then sees the new version and applies nothing. ``executescript`` is not
    used because it would COMMIT first.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    current, newest = current_version(conn), latest_version(migrations)
    if current > newest:
        raise ConfigError(
            f"The index {where!r} has schema version {current}",
            [
                f"this loradock knows versions up to {newest}: upgrade loradock, or point "
                "LORADOCK_INDEX at a new file and run `loradock registry sync`"
            ],
        )
    applied = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version <= current:
            continue
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, datetime.now(UTC).isoformat()),
        )
        applied.append(migration.version)
    return applied
