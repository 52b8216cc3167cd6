"""Arena: Elo arithmetic, win rates, durable votes, blind pairing."""

from __future__ import annotations

import random
import sqlite3

import pytest

from loradock.spaces.arena import (
    INITIAL_ELO,
    Arena,
    Vote,
    default_db_path,
    elo_update,
    expected_score,
    pick_pair,
    standings,
)


def test_expected_score_is_a_half_between_equals_and_symmetric():
    assert expected_score(1000, 1000) == pytest.approx(0.5)
    assert expected_score(1400, 1000) == pytest.approx(10 / 11)  # 400 points: odds of 10 to 1
    assert expected_score(1200, 1000) + expected_score(1000, 1200) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ra", "rb", "outcome", "new_a", "new_b"),
    [
        (1000, 1000, "a", 1016.0, 984.0),
        (1000, 1000, "b", 984.0, 1016.0),
        (1000, 1000, "tie", 1000.0, 1000.0),
        (1400, 1000, "a", 1400 + 32 / 11, 1000 - 32 / 11),  # the favourite gains little
        (1400, 1000, "b", 1400 - 320 / 11, 1000 + 320 / 11),  # an upset moves a lot
        (1400, 1000, "tie", 1400 - 32 * (10 / 11 - 0.5), 1000 + 32 * (10 / 11 - 0.5)),
    ],
)
def test_elo_update_matches_the_formula(ra, rb, outcome, new_a, new_b):
    a, b = elo_update(ra, rb, outcome)
    assert a == pytest.approx(new_a)
    assert b == pytest.approx(new_b)
    assert a + b == pytest.approx(ra + rb)  # rating points are conserved


@pytest.mark.parametrize("outcome", ["A", "left", "", "draw"])
def test_elo_update_rejects_unknown_outcomes(outcome):
    with pytest.raises(ValueError, match=repr(outcome)):
        elo_update(1000, 1000, outcome)


def test_standings_replay_votes_in_order_with_win_rates():
    votes = [
        Vote("x", "y", "a"),
        Vote("x", "z", "a"),
        Vote("y", "z", "tie"),
        Vote("z", "x", "a"),
    ]
    table = {s.model: s for s in standings(votes)}
    assert (table["x"].wins, table["x"].losses, table["x"].ties, table["x"].games) == (2, 1, 0, 3)
    assert table["x"].win_rate == pytest.approx(2 / 3)
    assert table["y"].win_rate == pytest.approx(0.25)  # one loss, one tie
    assert table["z"].win_rate == pytest.approx(0.5)  # loss, tie, win
    # Replaying by hand gives the same ratings.
    r = {"x": INITIAL_ELO, "y": INITIAL_ELO, "z": INITIAL_ELO}
    for v in votes:
        r[v.model_a], r[v.model_b] = elo_update(r[v.model_a], r[v.model_b], v.outcome)
    for model, rating in r.items():
        assert table[model].elo == pytest.approx(rating)
    assert [s.model for s in standings(votes)] == sorted(r, key=lambda m: -r[m])


def test_no_games_means_no_win_rate():
    assert standings([]) == []


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
    assert by_model["acme/a"].elo == pytest.approx(1016.0)
    # Plain sqlite3 sees the same rows: the file is the record.
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 3


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
