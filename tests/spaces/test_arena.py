"""Arena store: durable votes, one vote per battle, seeded battles, the copy that
outlives the local disk (a folder, or a dataset repo on a Hub-API server)."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from loradock.spaces.arena import (
    Arena,
    DuplicateVoteError,
    Vote,
    default_db_path,
    new_battle,
    pick_pair,
)
from loradock.spaces.vote_log import FolderVoteLog, HubVoteLog, open_vote_log, push_minutes

pytest_plugins = ["hubserver.fixtures"]


def test_votes_survive_reopening_the_database(tmp_path):
    path = tmp_path / "votes" / "arena.sqlite"
    arena = Arena(path)
    first = arena.record(Vote("acme/a", "acme/b", "a", prompt="p1", base_model="base"))
    arena.record(Vote("acme/b", "base", "tie", prompt="p2", base_model="base"))
    arena.record(Vote("other/x", "other/y", "b", base_model="other-base"))
    assert first.id == 1 and first.created_at

    reopened = Arena(path)
    votes = reopened.votes()
    assert [(v.model_a, v.model_b, v.outcome, v.prompt) for v in votes][:2] == [
        ("acme/a", "acme/b", "a", "p1"),
        ("acme/b", "base", "tie", "p2"),
    ]
    assert len(reopened.votes(base_model="base")) == 2
    by_model = {s.model: s for s in reopened.standings(base_model="base")}
    assert set(by_model) == {"acme/a", "acme/b", "base"}
    assert by_model["acme/a"].rating > by_model["base"].rating  # a won, b tied base
    with sqlite3.connect(path) as db:  # plain sqlite3 sees the same rows: the file is the record
        assert db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 3


def test_one_vote_per_battle(tmp_path):
    arena = Arena(tmp_path / "arena.sqlite")
    battle = new_battle(["base", "acme/a"], "p", "base", random.Random(0))
    arena.record(Vote.on(battle, "a"))
    with pytest.raises(DuplicateVoteError, match="already has its vote"):
        arena.record(Vote.on(battle, "b"))
    assert [v.outcome for v in arena.votes()] == ["a"]
    other = new_battle(["base", "acme/a"], "p", "base", random.Random(0))
    assert other.id != battle.id  # ids are fresh even from the same rng
    arena.record(Vote.on(other, "b"))
    assert len(arena.votes()) == 2


def test_battles_draw_their_seed_from_the_rng():
    seeds = {new_battle(["x", "y"], "p", None, random.Random(n)).seed for n in range(20)}
    assert len(seeds) == 20
    assert new_battle(["x", "y"], "p", None, random.Random(5)).seed == (
        new_battle(["x", "y"], "p", None, random.Random(5)).seed
    )


def test_a_database_from_before_battle_ids_gains_them(tmp_path):
    path = tmp_path / "arena.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,"
            " model_a TEXT NOT NULL, model_b TEXT NOT NULL, outcome TEXT NOT NULL,"
            " prompt TEXT NOT NULL DEFAULT '', base_model TEXT)"
        )
        db.execute("INSERT INTO votes VALUES (1, 't', 'x', 'y', 'a', '', 'b')")
    arena = Arena(path)
    arena.record(Vote("x", "y", "b", battle_id="B1", seed=3))
    assert [(v.battle_id, v.seed) for v in arena.votes()] == [(None, None), ("B1", 3)]


@pytest.mark.parametrize(
    ("vote", "message"),
    [
        (Vote("a", "b", "left"), "outcome 'left'"),
        (Vote("a", "a", "a"), "cannot play itself"),
        (Vote("", "b", "a"), "both models must be named"),
        (Vote("a", "", "tie"), "both models must be named"),
    ],
)
def test_bad_votes_are_refused_and_nothing_is_stored(tmp_path, vote, message):
    arena = Arena(tmp_path / "arena.sqlite")
    with pytest.raises(ValueError, match=message):
        arena.record(vote)
    assert arena.votes() == []


def test_a_fresh_disk_reads_the_votes_back_from_the_folder(tmp_path):
    log_dir = tmp_path / "shared-votes"
    first = Arena(tmp_path / "disk1" / "arena.sqlite", log=FolderVoteLog(log_dir))
    for n, outcome in enumerate(("a", "tie")):
        first.record(Vote("acme/a", "base", outcome, "p", "base", battle_id=f"B{n}", seed=n))
    second = Arena(tmp_path / "disk2" / "arena.sqlite", log=FolderVoteLog(log_dir))
    assert second.restored == 2
    assert [(v.battle_id, v.outcome, v.seed) for v in second.votes()] == [
        ("B0", "a", 0),
        ("B1", "tie", 1),
    ]
    second.record(Vote("acme/a", "base", "b", battle_id="B2"))
    assert len(list(log_dir.glob("*.jsonl"))) == 2  # one file per process: no overwriting
    third = Arena(tmp_path / "disk2" / "arena.sqlite", log=FolderVoteLog(log_dir))
    assert third.restored == 0 and len(third.votes()) == 3  # read twice, stored once


def test_a_torn_line_in_the_log_is_skipped(tmp_path):
    (tmp_path / "log").mkdir()
    good = {"model_a": "x", "model_b": "y", "outcome": "a", "battle_id": "B1"}
    (tmp_path / "log" / "old.jsonl").write_text(json.dumps(good) + '\n{"model_a": "x", "mo')
    arena = Arena(tmp_path / "arena.sqlite", log=FolderVoteLog(tmp_path / "log"))
    assert arena.restored == 1


def test_votes_reach_a_dataset_repo_and_come_back_on_a_fresh_disk(tmp_path, hub_server):
    log = HubVoteLog(
        "acme/arena-votes", endpoint=hub_server.url, token=hub_server.token, staging=tmp_path / "s1"
    )
    first = Arena(tmp_path / "disk1" / "arena.sqlite", log=log)
    first.record(Vote("acme/a", "base", "a", "p", "base", battle_id="B1", seed=9))
    log.close()  # commits what is staged
    fresh = HubVoteLog(
        "acme/arena-votes", endpoint=hub_server.url, token=hub_server.token, staging=tmp_path / "s2"
    )
    second = Arena(tmp_path / "disk2" / "arena.sqlite", log=fresh)
    fresh.close()
    assert second.restored == 1
    assert [(v.model_a, v.outcome, v.battle_id, v.seed) for v in second.votes()] == [
        ("acme/a", "a", "B1", 9)
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LORADOCK_ARENA_DATASET": "no-slash"}, "'org/name'"),
        ({"LORADOCK_ARENA_DATASET": "a/b", "LORADOCK_ARENA_VOTES_DIR": "/x"}, "not both"),
        ({"LORADOCK_ARENA_PUSH_MINUTES": "0", "LORADOCK_ARENA_DATASET": "a/b"}, "positive"),
    ],
)
def test_vote_log_settings_that_cannot_work_are_refused(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        open_vote_log()


def test_no_vote_log_unless_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("LORADOCK_ARENA_DATASET", raising=False)
    monkeypatch.delenv("LORADOCK_ARENA_VOTES_DIR", raising=False)
    assert open_vote_log() is None
    assert isinstance(open_vote_log(folder=tmp_path), FolderVoteLog)
    assert push_minutes("0.5") == 0.5


def test_db_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADOCK_ARENA_DB", str(tmp_path / "mine.sqlite"))
    assert default_db_path() == tmp_path / "mine.sqlite"
    assert Arena().path == tmp_path / "mine.sqlite"
    monkeypatch.delenv("LORADOCK_ARENA_DB")
    assert default_db_path().name == "arena.sqlite"


def test_pick_pair_gives_two_distinct_models_in_both_orders():
    rng = random.Random(0)
    pairs = {pick_pair(["base", "a", "b"], rng) for _ in range(60)}
    assert all(x != y for x, y in pairs)
    assert ("a", "base") in pairs and ("base", "a") in pairs  # order is random: blind


@pytest.mark.parametrize("models", [[], ["base"], ["base", "base"]])
def test_pick_pair_needs_two_models(models):
    with pytest.raises(ValueError, match="needs two models"):
        pick_pair(models)
