"""The SQLite index on records built directly: writes, lookups, queries, migrations, locking."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    ConfigError,
    InvalidNameError,
    RevisionNotFoundError,
)
from loradock.registry.index import Index
from loradock.registry.index_query import build_compatible_sql, build_search_sql
from loradock.registry.migrations import MIGRATIONS, Migration
from loradock.registry.records import AdapterRecord
from loradock.registry.search_query import SearchQuery

BASE_A = "acme/base-a"
BASE_B = "acme/base-b"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def sha(n: int) -> str:
    return f"{n:040x}"


def rec(repo: str, n: int, **kw) -> AdapterRecord:
    fields = dict(
        repo_id=repo,
        sha=sha(n),
        base_model=BASE_A,
        tasks=("dates",),
        tags=("lora", "peft"),
        peft_type="LORA",
        rank=8,
        alpha=16.0,
        target_modules=("q_proj", "v_proj"),
        size_bytes=1000 + n,
        license="apache-2.0",
        datasets=("acme/dates",),
        metrics={"dates/exact_match": 0.5},
        created_at=T0 + timedelta(hours=n),
        updated_at=T0 + timedelta(hours=n),
        is_latest=True,
    )
    fields.update(kw)
    return AdapterRecord(**fields)


@pytest.fixture
def index(tmp_path):
    with Index(tmp_path / "index.sqlite") as ix:
        yield ix


@pytest.fixture
def filled(index):
    """Five adapter repos on two bases, one with an old revision, one base model, aliases."""
    index.upsert_many(
        [
            rec("acme/dates-old", 1, is_latest=False, metrics={"dates/exact_match": 0.99}),
            rec("acme/dates-old", 2, metrics={"dates/exact_match": 0.40}, aliases=("prod",)),
            rec("acme/dates-big", 3, rank=64, metrics={"dates/exact_match": 0.90}),
            rec(
                "acme/json-a",
                4,
                tasks=("json",),
                tags=("lora", "peft", "extraction"),
                metrics={"json/exact_match": 0.7, "json/f1": 0.8},
            ),
            rec("acme/dates-on-b", 5, base_model=BASE_B, metrics={"dates/exact_match": 0.95}),
            rec("acme/untested", 6, metrics={}, rank=4),
            rec("acme/base-a", 7, kind="base", base_model=None, rank=None, metrics={}, tasks=()),
        ]
    )
    index.set_aliases("acme/dates-old", {"prod": sha(2), "legacy": sha(1)})
    return index


def ids(records) -> list[str]:
    return [r.repo_id for r in records]


# -- writes and point reads ------------------------------------------------------------------


def test_round_trip_keeps_every_field(index):
    record = rec("acme/one", 1, aliases=("prod",), tags=("z", "a"), private=True)
    index.upsert(record)
    assert index.get("acme/one") == record
    assert index.get("acme/one", sha(1)) == record
    assert index.get("acme/one", "prod") == record
    assert index.get("acme/one", "main") == record


def test_new_latest_revision_demotes_the_old_one(filled):
    filled.upsert(rec("acme/dates-big", 30, metrics={"dates/exact_match": 0.1}))
    assert filled.get("acme/dates-big").sha == sha(30)
    assert filled.get("acme/dates-big", sha(3)).is_latest is False
    assert filled.known_shas("acme/dates-big") == {sha(3), sha(30)}
    assert [r.sha for r in filled.revisions("acme/dates-big")] == [sha(30), sha(3)]
    filled.set_latest("acme/dates-big", sha(3))
    assert filled.latest_sha("acme/dates-big") == sha(3)


def test_upsert_of_a_known_sha_replaces_its_rows(filled):
    filled.upsert(rec("acme/json-a", 4, tasks=("sql",), metrics={"sql/exact_match": 0.3}))
    row = filled.get("acme/json-a")
    assert row.tasks == ("sql",) and row.metrics == {"sql/exact_match": 0.3}
    assert found(filled, task="json") == []
    assert len(filled.known_shas("acme/json-a")) == 1


def test_aliases_are_replaced_and_listed(filled):
    assert filled.aliases("acme/dates-old") == {"legacy": sha(1), "prod": sha(2)}
    assert filled.get("acme/dates-old", "legacy").sha == sha(1)
    assert filled.get("acme/dates-old").aliases == ("prod",)
    filled.set_aliases("acme/dates-old", {"staging": sha(1)})
    assert filled.aliases("acme/dates-old") == {"staging": sha(1)}
    assert filled.get("acme/dates-old", "staging").aliases == ("staging",)


def test_remove_repo_takes_everything_with_it(filled):
    before = filled.stats()
    filled.remove_repo("acme/dates-old")
    after = filled.stats()
    assert "acme/dates-old" not in filled.repos()
    assert after.revisions == before.revisions - 2
    assert after.aliases == before.aliases - 2
    assert after.metrics == before.metrics - 2
    filled.remove_repo("acme/dates-old")  # absent: no error


def test_stats_count_what_was_written(filled):
    stats = filled.stats()
    assert (stats.repos, stats.revisions, stats.adapters, stats.bases) == (6, 7, 5, 1)
    assert stats.schema_version == max(m.version for m in MIGRATIONS)


def test_failed_batch_writes_nothing(filled):
    before = filled.stats()
    bad = rec("acme/new", 50, aliases=("Not An Alias",))
    with pytest.raises(InvalidNameError, match="Not An Alias"):
        filled.upsert_many([rec("acme/fine", 49), bad])
    assert filled.stats() == before
    assert "acme/fine" not in filled.repos()


@pytest.mark.parametrize(
    ("repo", "revision", "error", "quoted"),
    [
        ("acme/nope", None, AdapterNotFoundError, "acme/nope"),
        ("acme/dates-old", sha(999), RevisionNotFoundError, sha(999)),
        ("acme/dates-old", "staging", AliasNotFoundError, "staging"),
        ("acme/json-a", "prod", AliasNotFoundError, "prod"),
        ("../etc/passwd", None, InvalidNameError, "../etc/passwd"),
        ("acme/dates-old", "../../x", InvalidNameError, "../../x"),
        ("acme", None, InvalidNameError, "acme"),
    ],
)
def test_get_errors_quote_the_name_and_say_what_to_do(filled, repo, revision, error, quoted):
    with pytest.raises(error) as info:
        filled.get(repo, revision)
    message = str(info.value)
    assert quoted in message
    if error is not InvalidNameError:
        assert "loradock registry" in message


def test_alias_error_lists_the_aliases_that_exist(filled):
    with pytest.raises(AliasNotFoundError, match="legacy, prod"):
        filled.get("acme/dates-old", "canary")


# -- searches --------------------------------------------------------------------------------


def found(index: Index, **fields) -> list[str]:
    return ids(index.search(SearchQuery(**fields)))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # Default order: newest indexed first.
        (
            {"base_model": BASE_A},
            ["acme/untested", "acme/json-a", "acme/dates-big", "acme/dates-old"],
        ),
        (
            {"task": "dates"},
            ["acme/untested", "acme/dates-on-b", "acme/dates-big", "acme/dates-old"],
        ),
        ({"tag": "extraction"}, ["acme/json-a"]),
        ({"base_model": BASE_B, "task": "dates"}, ["acme/dates-on-b"]),
        ({"task": "dates", "tag": "extraction"}, []),
        # The old revision's 0.99 does not count: only latest revisions compete by default.
        (
            {"base_model": BASE_A, "task": "dates", "sort": "dates/exact_match", "limit": 2},
            ["acme/dates-big", "acme/dates-old"],
        ),
        (
            {"task": "dates", "sort": "dates/exact_match", "descending": False},
            ["acme/dates-old", "acme/dates-big", "acme/dates-on-b"],
        ),
        ({"metric": "dates/exact_match", "min_value": 0.9}, ["acme/dates-on-b", "acme/dates-big"]),
        # A metric without a threshold: repos that have it at all, sorted by it.
        ({"metric": "json/f1"}, ["acme/json-a"]),
        # A threshold on one metric, sorted by another.
        ({"metric": "json/f1", "min_value": 0.5, "sort": "json/exact_match"}, ["acme/json-a"]),
        ({"kind": "base"}, ["acme/base-a"]),
        ({"sort": "rank", "limit": 1}, ["acme/dates-big"]),
        ({"limit": 2}, ["acme/untested", "acme/dates-on-b"]),
    ],
)
def test_search(filled, fields, expected):
    assert found(filled, **fields) == expected


def test_search_all_kinds_and_revisions(filled):
    assert len(filled.search(SearchQuery(kind=None))) == 6
    query = SearchQuery(metric="dates/exact_match", min_value=0.9, all_revisions=True)
    assert [(r.repo_id, r.sha) for r in filled.search(query)] == [
        ("acme/dates-old", sha(1)),
        ("acme/dates-on-b", sha(5)),
        ("acme/dates-big", sha(3)),
    ]


@pytest.mark.parametrize(
    ("options", "quoted"),
    [
        ({"metric": "exact_match"}, "'exact_match'"),
        ({"sort": "best"}, "'best'"),
        ({"min_value": 0.5}, "needs a metric"),
        ({"metric": "dates/em", "min_value": "high"}, "'high'"),
        ({"metric": "dates/em", "min_value": math.nan}, "nan"),
        ({"limit": 0}, "limit=0"),
        ({"limit": "10"}, "limit='10'"),
        ({"limit": 10_000_000}, "limit=10000000"),
        ({"kind": "lora"}, "kind='lora'"),
        ({"task": ""}, "task=''"),
        ({"base_model": 3}, "base_model=3"),
    ],
)
def test_bad_search_options_raise_one_error_quoting_them(options, quoted):
    with pytest.raises(ConfigError) as info:
        SearchQuery(**options)
    assert quoted in str(info.value)


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        ({"metric": "x", "sort": "y", "limit": -1}, 3),
        ({"min_value": "high"}, 2),  # not a number, and no metric to compare with
    ],
)
def test_bad_search_collects_every_problem(options, problems):
    with pytest.raises(ConfigError) as info:
        SearchQuery(**options)
    assert len(info.value.problems) == problems


def test_min_value_is_kept_as_a_float():
    assert SearchQuery(metric="dates/em", min_value="0.5").min_value == 0.5


def test_compatible_with_filters_by_base_and_rank(filled):
    assert ids(filled.compatible_with(BASE_A)) == [
        "acme/dates-big",
        "acme/json-a",
        "acme/dates-old",
        "acme/untested",
    ]
    assert ids(filled.compatible_with(BASE_A, max_rank=8))[-1] == "acme/untested"
    assert "acme/dates-big" not in ids(filled.compatible_with(BASE_A, max_rank=8))
    assert ids(filled.compatible_with(BASE_A, max_rank=4)) == ["acme/untested"]
    assert len(filled.compatible_with(BASE_A, limit=1)) == 1
    assert filled.compatible_with("acme/unknown") == []


@pytest.mark.parametrize(
    ("base", "options", "quoted"),
    [("", {}, "''"), (BASE_A, {"max_rank": 0}, "0"), (BASE_A, {"limit": -3}, "-3")],
)
def test_bad_compatibility_queries(filled, base, options, quoted):
    with pytest.raises(ConfigError, match=quoted):
        filled.compatible_with(base, **options)


@pytest.mark.parametrize(
    "query",
    [
        SearchQuery(),
        SearchQuery(base_model=BASE_A),
        SearchQuery(task="dates"),
        SearchQuery(tag="lora"),
        SearchQuery(base_model=BASE_A, task="dates", sort="dates/exact_match", limit=10),
        SearchQuery(metric="dates/exact_match", min_value=0.9),
    ],
    ids=["all", "base", "task", "tag", "best-for-task-on-base", "threshold"],
)
def test_main_queries_walk_an_index_in_result_order(filled, query):
    # No full scan and no sort of every match: that is what keeps 100k as fast as 10k.
    plan = " | ".join(filled.explain(*build_search_sql(query)))
    assert "USING" in plan and "TEMP B-TREE" not in plan, plan
    assert "SCAN" not in plan, plan


def test_compatible_query_walks_an_index(filled):
    plan = " | ".join(filled.explain(*build_compatible_sql(BASE_A, max_rank=8, limit=10)))
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


# -- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "quoted"),
    [
        ({"repo_id": "no-slash"}, "'no-slash'"),
        ({"sha": ""}, "sha ''"),
        ({"kind": "lora"}, "'lora'"),
        ({"base_model": None}, "base_model"),
        ({"rank": 0}, "rank 0"),
        ({"size_bytes": -1}, "-1"),
        ({"metrics": {"accuracy": 0.5}}, "'accuracy'"),
        ({"metrics": {"dates/em": "high"}}, "'high'"),
        ({"metrics": {"dates/em": math.inf}}, "inf"),
    ],
)
def test_invalid_records_are_refused(fields, quoted):
    with pytest.raises(ConfigError) as info:
        rec("acme/x", 1, **fields)
    assert quoted in str(info.value)


# -- the file: migrations, corruption, several processes ------------------------------------


def test_migrations_run_once_and_in_order(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    n = max(m.version for m in MIGRATIONS)
    extra = Migration(n + 1, "notes", "CREATE TABLE notes (revision_id INTEGER, text TEXT);")
    later = Migration(
        n + 2, "notes index", "CREATE INDEX notes_by_revision ON notes (revision_id);"
    )
    # Out of order in the tuple on purpose: the index sorts them.
    with Index(path, migrations=(*MIGRATIONS, later, extra)) as ix:
        assert ix.schema_version == n + 2
    conn = sqlite3.connect(path)
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert versions == list(range(1, n + 3))
    assert {"notes", "notes_by_revision", "revisions", "metrics", "aliases"} <= names
    with Index(path, migrations=(*MIGRATIONS, extra, later)) as ix:  # nothing new to apply
        assert ix.schema_version == n + 2


def test_a_failing_migration_leaves_the_previous_schema(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    n = max(m.version for m in MIGRATIONS)
    broken = Migration(n + 1, "broken", "CREATE TABLE ok (x INTEGER);\nCREATE TABLE bad (;")
    with pytest.raises(ConfigError):
        Index(path, migrations=(*MIGRATIONS, broken))
    with Index(path) as ix:
        assert ix.schema_version == n
        assert "ok" not in {r[0] for r in ix._conn.execute("SELECT name FROM sqlite_master")}


def test_an_index_from_a_newer_loradock_is_refused(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path, migrations=(*MIGRATIONS, Migration(9, "future", "SELECT 1;"))).close()
    with pytest.raises(ConfigError, match="schema version 9"):
        Index(path)


def test_a_corrupt_file_says_how_to_rebuild(tmp_path):
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="loradock registry sync"):
        Index(path)


def test_file_is_in_wal_mode_with_foreign_keys(index):
    assert index._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert index._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_second_writer_waits_for_the_first(tmp_path):
    path = tmp_path / "index.sqlite"
    first, second = Index(path), Index(path)
    first.upsert(rec("acme/a", 1))
    done = threading.Event()

    def slow_writer():
        with first.transaction():
            first.upsert(rec("acme/b", 2))
            done.set()
            time.sleep(0.3)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    done.wait(5)
    # A reader sees the last committed state while the write is open (WAL) ...
    assert second.repos() == ["acme/a"]
    # ... and a writer waits on busy_timeout instead of failing with "database is locked".
    second.upsert(rec("acme/c", 3))
    thread.join()
    assert second.repos() == ["acme/a", "acme/b", "acme/c"]
    first.close()
    second.close()
