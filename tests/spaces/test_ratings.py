"""Bradley-Terry ratings: hand-computed cases, an independent solver, bootstrap intervals."""

from __future__ import annotations

import math
import random

import pytest

from loradock.spaces.ratings import (
    BASE_RATING,
    SCALE,
    Game,
    bootstrap_intervals,
    bradley_terry,
    standings,
)


def games(*spec: tuple[str, str, str, int]) -> list[Game]:
    return [Game(a, b, outcome) for a, b, outcome, n in spec for _ in range(n)]


def gradient_ascent(played: list[Game], prior_games: float) -> dict[str, float]:
    """An independent solver: plain gradient ascent on the log-likelihood, ties as half
    a win each way, the prior as tied games against a fixed reference at strength 0."""
    models = sorted({m for g in played for m in (g.model_a, g.model_b)})
    s = dict.fromkeys(models, 0.0)
    results = []  # (winner, loser or None for the reference, weight)
    for g in played:
        wa = {"a": 1.0, "b": 0.0, "tie": 0.5}[g.outcome]
        results += [(g.model_a, g.model_b, wa), (g.model_b, g.model_a, 1.0 - wa)]
    for m in models:
        results += [(m, None, prior_games / 2), (None, m, prior_games / 2)]
    for _ in range(20_000):
        grad = dict.fromkeys(models, 0.0)
        for winner, loser, weight in results:
            sw, sl = s.get(winner, 0.0), s.get(loser, 0.0)
            push = weight * (1.0 - 1.0 / (1.0 + math.exp(sl - sw)))
            if winner in grad:
                grad[winner] += push
            if loser in grad:
                grad[loser] -= push
        if max(abs(v) for v in grad.values()) < 1e-9:
            break
        s = {m: s[m] + 0.1 * grad[m] for m in models}
        if prior_games == 0:
            mean = sum(s.values()) / len(s)
            s = {m: v - mean for m, v in s.items()}
    return {m: BASE_RATING + SCALE * v for m, v in s.items()}


@pytest.mark.parametrize(
    ("played", "gap"),
    [
        # A won 3 of 4: strengths in ratio 3, so 400*log10(3) points apart.
        (games(("A", "B", "a", 3), ("A", "B", "b", 1)), 400 * math.log10(3)),
        # Ties count half to each: 2 wins + 1 tie = 2.5 against 1 win + 1 tie = 1.5.
        (
            games(("A", "B", "a", 2), ("B", "A", "a", 1), ("A", "B", "tie", 1)),
            400 * math.log10(5 / 3),
        ),
        # One win each and a tie: equals.
        (games(("A", "B", "a", 1), ("A", "B", "b", 1), ("A", "B", "tie", 1)), 0.0),
        # The side a model sat on does not matter.
        (games(("B", "A", "b", 3), ("B", "A", "a", 1)), 400 * math.log10(3)),
    ],
)
def test_two_models_match_the_closed_form(played, gap):
    ratings = bradley_terry(played, prior_games=0)
    assert ratings["A"] - ratings["B"] == pytest.approx(gap, abs=1e-6)
    assert (ratings["A"] + ratings["B"]) / 2 == pytest.approx(BASE_RATING)


THREE = games(
    ("x", "y", "a", 3),
    ("y", "x", "a", 1),
    ("y", "z", "a", 2),
    ("z", "y", "a", 1),
    ("x", "z", "tie", 2),
    ("z", "x", "a", 1),
)


@pytest.mark.parametrize("prior_games", [0.0, 1.0, 4.0])
def test_three_models_match_an_independent_solver(prior_games):
    ours = bradley_terry(THREE, prior_games=prior_games)
    theirs = gradient_ascent(THREE, prior_games)
    for model in ("x", "y", "z"):
        assert ours[model] == pytest.approx(theirs[model], abs=0.05)


def test_ratings_do_not_depend_on_the_order_of_votes():
    shuffled = list(THREE)
    random.Random(3).shuffle(shuffled)
    assert bradley_terry(shuffled) == pytest.approx(bradley_terry(THREE))


@pytest.mark.parametrize(
    ("played", "leader"),
    [
        (games(("A", "B", "a", 1)), "A"),  # one win: finite thanks to the prior
        (games(("A", "B", "b", 5)), "B"),
    ],
)
def test_an_unbeaten_model_gets_a_finite_rating(played, leader):
    ratings = bradley_terry(played)
    assert all(math.isfinite(r) for r in ratings.values())
    assert max(ratings, key=ratings.get) == leader
    assert sum(ratings.values()) / 2 == pytest.approx(BASE_RATING, abs=1e-6)  # symmetric


def test_bootstrap_intervals_are_a_function_of_votes_and_seed():
    first = bootstrap_intervals(THREE, rounds=100, seed=7)
    assert bootstrap_intervals(THREE, rounds=100, seed=7) == first
    assert bootstrap_intervals(THREE, rounds=100, seed=8) != first
    ratings = bradley_terry(THREE)
    for model, (low, high) in first.items():
        assert low < ratings[model] < high


def test_more_votes_narrow_the_interval():
    few = bootstrap_intervals(games(("A", "B", "a", 3), ("A", "B", "b", 2)), rounds=200)
    many = bootstrap_intervals(games(("A", "B", "a", 30), ("A", "B", "b", 20)), rounds=200)
    width = {name: iv["A"][1] - iv["A"][0] for name, iv in (("few", few), ("many", many))}
    assert width["many"] < width["few"]


def test_standings_count_games_and_sort_by_rating():
    table = standings(THREE)
    assert [s.model for s in table] == sorted(
        (s.model for s in table), key=lambda m: -bradley_terry(THREE)[m]
    )
    x = next(s for s in table if s.model == "x")
    assert (x.wins, x.losses, x.ties, x.games) == (3, 2, 2, 7)
    assert x.win_rate == pytest.approx(4 / 7)
    assert x.lower < x.rating < x.upper and x.interval() == f"{x.lower:.0f} to {x.upper:.0f}"


@pytest.mark.parametrize("played", [[], games(("A", "B", "draw", 1))])
def test_no_games_no_ratings_and_unknown_outcomes_refused(played):
    if not played:
        assert bradley_terry(played) == {} and standings(played) == []
    else:
        with pytest.raises(ValueError, match="'draw'"):
            bradley_terry(played)
