"""Arena store: durable votes, one vote per battle, seeded battles, the copy that
outlives the local disk (a folder, a dataset repo of the local hub, or a dataset repo on a
Hub-API server)."""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from loradock.errors import AdapterNotFoundError
from loradock.registry.local_hub import LocalHub
from loradock.settings import get_settings
from loradock.spaces.arena import (
    Arena,
    DuplicateVoteError,
    Vote,
    default_db_path,
    new_battle,
    pick_pair,
)
from loradock.spaces.vote_log import (
    FolderVoteLog,
    HubVoteLog,
    LocalHubVoteLog,
    open_vote_log,
    push_minutes,
)

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


def _dataset_files(hub_dir, repo_id="local/arena-votes") -> list[str]:
    info = LocalHub(hub_dir).repo_info(repo_id, repo_type="dataset")
    return [f.path for f in info.files]


@pytest.mark.parametrize("committed_by", ["close", "the timer"])
def test_votes_reach_a_local_hub_dataset_and_come_back_on_a_fresh_disk(tmp_path, committed_by):
    minutes = 0.001 if committed_by == "the timer" else 60.0
    log = LocalHubVoteLog(tmp_path / "hub", every_minutes=minutes)
    first = Arena(tmp_path / "disk1" / "arena.sqlite", log=log)
    first.record(Vote("acme/a", "base", "a", "p", "base", battle_id="B1", seed=9))
    if committed_by == "close":
        assert _dataset_files(tmp_path / "hub") == []  # staged, not committed yet
        log.close()
    deadline = time.monotonic() + 60
    while not _dataset_files(tmp_path / "hub"):
        assert time.monotonic() < deadline, "the vote never reached the dataset repo"
        time.sleep(0.05)
    log.close()
    fresh = LocalHubVoteLog(tmp_path / "hub")
    second = Arena(tmp_path / "disk2" / "arena.sqlite", log=fresh)
    fresh.close()
    assert second.restored == 1
    assert [(v.model_a, v.outcome, v.battle_id, v.seed) for v in second.votes()] == [
        ("acme/a", "a", "B1", 9)
    ]
    with pytest.raises(AdapterNotFoundError):  # a dataset, never a model the registry serves
        LocalHub(tmp_path / "hub").repo_info("local/arena-votes")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LORADOCK_ARENA_DATASET": "no-slash"}, "'org/name'"),
        ({"LORADOCK_ARENA_DATASET": "a/b", "LORADOCK_ARENA_VOTES_DIR": "/x"}, "not both"),
        ({"LORADOCK_ARENA_HUB": "/h", "LORADOCK_ARENA_VOTES_DIR": "/x"}, "not both"),
        ({"LORADOCK_ARENA_PUSH_MINUTES": "0", "LORADOCK_ARENA_DATASET": "a/b"}, "positive"),
        ({"LORADOCK_ARENA_PUSH_MINUTES": "-1"}, "positive"),
        ({"LORADOCK_STORE": "bogus"}, "LORADOCK_STORE"),
    ],
)
def test_vote_log_settings_that_cannot_work_are_refused(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        open_vote_log()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("LocalHubVoteLog", "local/arena-votes", "registry hub")),
        ({"LORADOCK_ARENA_HUB": "{tmp}/h"}, ("LocalHubVoteLog", "local/arena-votes", "{tmp}/h")),
        (
            {"LORADOCK_ARENA_HUB": "{tmp}/h", "LORADOCK_ARENA_DATASET": "acme/votes"},
            ("LocalHubVoteLog", "acme/votes", "{tmp}/h"),
        ),
        ({"LORADOCK_ARENA_VOTES_DIR": "{tmp}/v"}, ("FolderVoteLog", None, None)),
        ({"LORADOCK_STORE": "hf"}, None),  # the registry is on the Hub: no local hub to use
        ({"SPACE_ID": "acme/arena"}, None),  # a Hugging Face Space: its disk is wiped
    ],
)
def test_which_vote_log_the_settings_open(monkeypatch, tmp_path, env, expected):
    for key in ("LORADOCK_ARENA_DATASET", "LORADOCK_ARENA_VOTES_DIR", "LORADOCK_ARENA_HUB"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    log = open_vote_log()
    try:
        if expected is None:
            assert log is None
            return
        kind, repo_id, hub = expected
        assert type(log).__name__ == kind
        if repo_id is not None:
            root = get_settings().hub_dir if hub == "registry hub" else hub.format(tmp=tmp_path)
            assert (log.repo_id, log.hub.root) == (repo_id, Path(root).resolve())
            assert _dataset_files(root, repo_id) == []  # created, empty
    finally:
        if log is not None:
            log.close()


@pytest.mark.parametrize(
    ("env", "refused"),
    [({}, None), ({"LORADOCK_ARENA_HUB": "/h"}, "needs loradock installed")],
)
def test_a_space_deployed_without_loradock_never_opens_a_local_hub(monkeypatch, env, refused):
    for module in ("loradock.settings", "loradock.registry.local_hub"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it fails, as on a Space
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if refused is None:
        assert open_vote_log() is None
    else:
        with pytest.raises(ValueError, match=refused):
            open_vote_log()


@pytest.mark.parametrize(("value", "minutes"), [("0.5", 0.5), ("2", 2.0), (None, 1.0)])
def test_push_minutes_is_a_positive_number(monkeypatch, value, minutes):
    monkeypatch.delenv("LORADOCK_ARENA_PUSH_MINUTES", raising=False)
    assert push_minutes(value) == minutes


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
