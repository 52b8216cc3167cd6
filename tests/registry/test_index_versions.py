"""Task versions of metrics: kept from the card's model-index into the index, migrated into an
index made before they were stored, and shown where the leaderboard ranks unlike measurements."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from typer.testing import CliRunner

from loradock.errors import ConfigError
from loradock.registry.card import EvalMetric, build_adapter_card
from loradock.registry.records import AdapterRecord, TaskVersion, version_note
from loradock.registry.search_query import SearchQuery
from tests.helpers.registry import BASE_ID

KEY = "dates/exact_match"
V3 = TaskVersion("3.0", "a" * 64, 0)


def _record(repo: str, versions: dict | None = None, metrics: dict | None = None) -> AdapterRecord:
    return AdapterRecord(
        repo_id=repo,
        sha="1" * 40,
        base_model=BASE_ID,
        metrics={KEY: 0.5} if metrics is None else metrics,
        metric_versions=versions or {},
    )


@pytest.mark.parametrize(
    ("version", "label"),
    [
        (V3, "v3.0, 0-shot, config aaaaaaaa"),
        (TaskVersion("1", None, 5), "v1, 5-shot"),
        (TaskVersion(None, "b" * 64, None), "version ?, ?-shot, config bbbbbbbb"),
        (TaskVersion(), "not recorded"),
    ],
)
def test_version_labels(version, label):
    assert version.label == label


@pytest.mark.parametrize(
    ("versions", "problem"),
    [
        ({"other/acc": V3}, "metric_versions['other/acc']"),  # not a metric of the record
        ({KEY: {"version": "3.0"}}, f"metric_versions['{KEY}']"),  # not a TaskVersion
    ],
)
def test_record_refuses_versions_of_unknown_metrics(versions, problem):
    with pytest.raises(ConfigError) as info:
        _record("acme/a", versions)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("versions", "warned"),
    [
        ([V3, V3], None),
        ([V3, TaskVersion("3.0", "a" * 64, 5)], "v3.0, 5-shot"),  # n-shot differs
        ([V3, TaskVersion("3.0", "c" * 64, 0)], "config cccccccc"),  # config differs
        ([V3, TaskVersion("2.0", "a" * 64, 0)], "v2.0"),
        ([V3, None], "not recorded: acme/r1"),
        ([None, None], None),  # nothing recorded anywhere: nothing to tell apart
    ],
)
def test_version_note_says_when_rows_differ(versions, warned):
    rows = [_record(f"acme/r{i}", {KEY: v} if v else None) for i, v in enumerate(versions)]
    rows.append(_record("acme/other", metrics={}))  # without the metric: not ranked by it
    note = version_note(rows, KEY)
    if warned is None:
        assert note is None
    else:
        assert note is not None and warned in note and "acme/other" not in note


def _published_with_versions(registry, tmp_path, adapter_dir, versions) -> None:
    for name, version in versions.items():
        folder = tmp_path / name
        shutil.copytree(adapter_dir, folder)
        metric = EvalMetric(
            "dates", "acme/dates", "exact_match", 0.5, stderr=0.1,
            task_version=version.version, task_hash=version.config_hash,
            num_fewshot=version.num_fewshot,
        )  # fmt: skip
        card = build_adapter_card(base_model=BASE_ID, task="dates", eval_results=[metric])
        registry.publish(folder, f"acme/{name}", card=card)


def _versions(registry) -> dict[str, dict]:
    rows = registry.search(SearchQuery(sort=KEY))
    return {r.repo_id: dict(r.metric_versions) for r in rows}


def _make_schema_v1(path) -> None:
    """The index file as a loradock without task versions left it (schema version 1)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        conn.execute("DROP TABLE stale_revisions")
        for column in ("task_version", "task_hash", "num_fewshot"):
            conn.execute(f"ALTER TABLE metrics DROP COLUMN {column}")
    conn.close()


def test_card_versions_reach_the_index_and_survive_a_migration(
    registry_with_base, tmp_path, adapter_dir
):
    registry = registry_with_base
    wanted = {"a": V3, "b": TaskVersion("3.0", "a" * 64, 5)}
    _published_with_versions(registry, tmp_path, adapter_dir, wanted)
    expected = {f"acme/{n}": {KEY: v} for n, v in wanted.items()}
    assert _versions(registry) == expected
    path = registry.index.path
    registry.index.close()
    _make_schema_v1(path)

    from tests.helpers.registry import open_registry

    reopened = open_registry()  # migrates: rows kept and readable, their versions unknown
    assert reopened.index.schema_version == 2
    assert _versions(reopened) == {"acme/a": {}, "acme/b": {}}
    assert reopened.sync(progress=False).ok  # reads the stale revisions' cards again
    assert _versions(reopened) == expected
    assert reopened.sync(progress=False).revisions_added == 0  # nothing stale any more
    reopened.index.close()


def test_search_table_warns_when_ranked_rows_differ(registry_with_base, tmp_path, adapter_dir):
    from loradock import cli

    versions = {"a": V3, "b": TaskVersion("3.0", "a" * 64, 5)}
    _published_with_versions(registry_with_base, tmp_path, adapter_dir, versions)
    result = CliRunner().invoke(cli.app, ["registry", "search", "--sort", KEY])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "v3.0, 0-shot" in out and "v3.0, 5-shot" in out
    assert "warning: dates/exact_match was measured on different task versions" in out


def test_server_rows_carry_the_versions():
    """``GET /v1/registry/adapters`` rows (what the Space's leaderboard reads) are JSON."""
    import json

    from loradock.serving.http.registry_routes import _row

    row = json.loads(json.dumps(_row(_record("acme/a", {KEY: V3}))))
    assert row["metric_versions"] == {
        KEY: {"version": "3.0", "config_hash": "a" * 64, "num_fewshot": 0}
    }
