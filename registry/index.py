"""The index: a SQLite file of every indexed revision, for fast queries without the store.

The index is a cache of the store (``loradock registry sync`` rebuilds it from scratch), so
it optimises for reads: several processes (a server, a CLI, a training job) may open it at
once. WAL lets readers run beside one writer, ``busy_timeout`` makes a second writer wait
instead of failing, and each write is one ``BEGIN IMMEDIATE`` transaction, so a crash or an
error mid-write leaves the previous state.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    ConfigError,
    RevisionNotFoundError,
)
from loradock.registry.index_query import (
    IndexStats,
    build_compatible_sql,
    build_search_sql,
    load_records,
    read_stats,
)
from loradock.registry.index_write import write_record
from loradock.registry.migrations import MIGRATIONS, Migration, apply_migrations, current_version
from loradock.registry.names import (
    DEFAULT_REVISION,
    is_sha,
    validate_alias,
    validate_repo_id,
    validate_revision,
)
from loradock.registry.records import KINDS, AdapterRecord
from loradock.registry.search_query import SearchQuery

BUSY_TIMEOUT_MS = 30_000
_FRESH = "NOT EXISTS (SELECT 1 FROM stale_revisions s WHERE s.revision_id = r.id)"


class Index:
    """``Index(path)`` opens (creating and migrating) the SQLite index at ``path``."""

    def __init__(self, path: str | Path, *, migrations: tuple[Migration, ...] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one connection shared by a server's threads
        self._depth = 0
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # transactions are explicit (BEGIN IMMEDIATE)
                check_same_thread=False,
            )
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(migrations)
        except BaseException as exc:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            if not isinstance(exc, sqlite3.DatabaseError):
                raise
            raise ConfigError(
                f"Cannot open the index {str(self.path)!r}",
                [
                    f"{exc}; the index is a cache of the store: delete the file (or point "
                    "LORADOCK_INDEX elsewhere) and run `loradock registry sync` to rebuild it"
                ],
            ) from exc

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; nested calls join the outer one (sync: one per repo)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        # A read of several statements sees one snapshot, even while a sync writes.
        with self._lock:
            if self._depth:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _migrate(self, migrations: tuple[Migration, ...]) -> None:
        with self.transaction():
            apply_migrations(self._conn, migrations, where=str(self.path))

    @property
    def schema_version(self) -> int:
        with self._reading() as conn:
            return current_version(conn)

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, record: AdapterRecord) -> None:
        """Insert or replace one revision (and point ``record.aliases`` at it)."""
        self.upsert_many([record])

    def upsert_many(self, records: Iterable[AdapterRecord]) -> int:
        """Insert or replace many revisions in one transaction; returns how many."""
        count = 0
        with self.transaction():
            conn = self._conn
            for rec in records:
                write_record(conn, rec)
                count += 1
        return count

    def set_latest(self, repo_id: str, sha: str) -> None:
        """Mark ``sha`` as the head of main (the revision a plain ``org/name`` means)."""
        with self.transaction():
            repo_pk = self._repo_pk(repo_id)
            rid = self._revision_id(repo_pk, repo_id, sha)
            self._conn.execute(
                "UPDATE revisions SET is_latest = (id = ?) WHERE repo_pk = ?", (rid, repo_pk)
            )

    def set_aliases(self, repo_id: str, aliases: Mapping[str, str]) -> None:
        """Replace the repo's aliases with ``{alias: sha}`` (what the store's tags say)."""
        rows = []
        for alias, sha in aliases.items():
            validate_alias(alias)
            validate_revision(sha)
            rows.append((alias, sha))
        with self.transaction():
            repo_pk = self._repo_pk(repo_id)
            self._conn.execute("DELETE FROM aliases WHERE repo_pk = ?", (repo_pk,))
            self._conn.executemany(
                "INSERT INTO aliases (repo_pk, alias, sha) VALUES (?, ?, ?)",
                [(repo_pk, a, s) for a, s in rows],
            )

    def remove_repo(self, repo_id: str) -> None:
        """Forget a repo and all its revisions, metrics and aliases (no error if absent)."""
        with self.transaction():
            self._conn.execute("DELETE FROM repos WHERE repo_id = ?", (repo_id,))

    # -- point reads -------------------------------------------------------------------------

    def _repo_pk(self, repo_id: str) -> int:
        validate_repo_id(repo_id)
        row = self._conn.execute("SELECT id FROM repos WHERE repo_id = ?", (repo_id,)).fetchone()
        if row is None:
            raise AdapterNotFoundError(
                f"No repo {repo_id!r} in the index {str(self.path)!r}. Run "
                "`loradock registry sync` to index the store, or `loradock registry search` "
                "to see what is there."
            )
        return row[0]

    def _revision_id(self, repo_pk: int, repo_id: str, sha: str) -> int:
        row = self._conn.execute(
            "SELECT id FROM revisions WHERE repo_pk = ? AND sha = ?", (repo_pk, sha)
        ).fetchone()
        if row is None:
            raise RevisionNotFoundError(
                f"Revision {sha!r} of {repo_id!r} is not in the index. Run "
                "`loradock registry sync` if it was pushed recently, or "
                f"`loradock registry show {repo_id}` to list the indexed revisions."
            )
        return row[0]

    def get(self, repo_id: str, revision: str | None = None) -> AdapterRecord:
        """The record of ``repo_id`` at ``revision``: ``None``/``main`` (latest), a sha, or an alias."""
        with self._reading() as conn:
            repo_pk = self._repo_pk(repo_id)
            if revision is None or revision == DEFAULT_REVISION:
                row = conn.execute(
                    "SELECT id FROM revisions WHERE repo_pk = ? AND is_latest = 1", (repo_pk,)
                ).fetchone()
                if row is None:
                    raise RevisionNotFoundError(
                        f"{repo_id!r} has no indexed head of 'main'. Run "
                        "`loradock registry sync`, or name a revision: "
                        f"`loradock registry show {repo_id}` lists them."
                    )
                return self._load([row[0]])[0]
            validate_revision(revision)
            if is_sha(revision):
                return self._load([self._revision_id(repo_pk, repo_id, revision)])[0]
            row = conn.execute(
                "SELECT sha FROM aliases WHERE repo_pk = ? AND alias = ?", (repo_pk, revision)
            ).fetchone()
            if row is None:
                known = sorted(self._aliases(repo_pk))
                raise AliasNotFoundError(
                    f"Alias {revision!r} is not set on {repo_id!r} (its aliases: "
                    f"{', '.join(known) or 'none'}). Set it with `loradock registry alias set "
                    f"{repo_id} {revision} <sha>`, or run `loradock registry sync` if it was "
                    "set on the Hub."
                )
            return self._load([self._revision_id(repo_pk, repo_id, row[0])])[0]

    def _aliases(self, repo_pk: int) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT alias, sha FROM aliases WHERE repo_pk = ? ORDER BY alias", (repo_pk,)
        )
        return dict(rows.fetchall())

    def aliases(self, repo_id: str) -> dict[str, str]:
        """``{alias: sha}`` for one repo."""
        with self._reading():
            return self._aliases(self._repo_pk(repo_id))

    def revisions(self, repo_id: str) -> list[AdapterRecord]:
        """Every indexed revision of a repo, newest first."""
        with self._reading() as conn:
            repo_pk = self._repo_pk(repo_id)
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM revisions WHERE repo_pk = ? ORDER BY updated_at DESC, id DESC",
                    (repo_pk,),
                )
            ]
            return self._load(ids)

    def known_shas(self, repo_id: str) -> set[str]:
        """Shas of the repo already indexed (empty if the repo is unknown), less those a
        schema migration marked stale: a sync reads those again."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT r.sha FROM revisions r JOIN repos p ON p.id = r.repo_pk"
                f" WHERE p.repo_id = ? AND {_FRESH}",
                (repo_id,),
            )
            return {r[0] for r in rows}

    def latest_sha(self, repo_id: str) -> str | None:
        """The indexed head of main, or None (none indexed, or marked stale: see known_shas)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT r.sha FROM revisions r JOIN repos p ON p.id = r.repo_pk"
                f" WHERE p.repo_id = ? AND r.is_latest = 1 AND {_FRESH}",
                (repo_id,),
            ).fetchone()
            return row[0] if row else None

    def repos(self) -> list[str]:
        with self._reading() as conn:
            return [r[0] for r in conn.execute("SELECT repo_id FROM repos ORDER BY repo_id")]

    def stats(self) -> IndexStats:
        with self._reading() as conn:
            return read_stats(conn, self.path)

    # -- queries -----------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> list[AdapterRecord]:
        """Revisions matching every filter of ``query`` (see :class:`SearchQuery`)."""
        sql, params = build_search_sql(query)
        with self._reading() as conn:
            return self._load([row[0] for row in conn.execute(sql, params)])

    def compatible_with(
        self, base_model: str, *, max_rank: int | None = None, limit: int | None = 50
    ) -> list[AdapterRecord]:
        """Latest adapters trained on ``base_model`` (rank at most ``max_rank``), highest rank first.

        ``limit=None`` returns all of them; the default keeps the answer bounded on a big index.
        """
        sql, params = build_compatible_sql(base_model, max_rank=max_rank, limit=limit)
        with self._reading() as conn:
            return self._load([row[0] for row in conn.execute(sql, params)])

    def explain(self, sql: str, params: Iterable[Any] = ()) -> list[str]:
        """SQLite's query plan for ``sql`` (tests check the main queries use indexes)."""
        with self._reading() as conn:
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, list(params))]

    def _load(self, ids: list[int]) -> list[AdapterRecord]:
        return load_records(self._conn, ids)


__all__ = ["KINDS", "Index", "IndexStats"]
