"""Arena ratings: Bradley-Terry maximum likelihood with bootstrap 95% intervals.

Sequential Elo depends on the order votes arrive in; Bradley-Terry does not: it finds the
strengths ``p`` that make the observed results most likely, with
``P(i beats j) = p_i / (p_i + p_j)``. A tie counts as half a win for each side, as
Chatbot Arena counts it. Ratings are on the Elo scale (400 points = odds of 10 to 1).

Few votes make the plain maximum infinite (a model that never lost has no finite
strength), so each model also plays ``prior_games`` virtual tied games against a fixed
reference rated ``BASE_RATING``: a model without votes sits at 1000, and each real vote
outweighs the prior as votes accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BASE_RATING = 1000.0
SCALE = 400.0 / math.log(10.0)  # natural-log strength -> Elo points
PRIOR_GAMES = 1.0
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_SEED = 0
_SCORES = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5)}


@dataclass(frozen=True)
class Game:
    """One decided battle: ``outcome`` is "a", "b" or "tie"."""

    model_a: str
    model_b: str
    outcome: str


@dataclass(frozen=True)
class Standing:
    """One model's arena record: rating with its bootstrap 95% interval, and counts."""

    model: str
    rating: float
    lower: float
    upper: float
    games: int
    wins: int
    losses: int
    ties: int

    @property
    def win_rate(self) -> float:
        """Ties count half, so a model that only ties sits at 0.5."""
        return (self.wins + 0.5 * self.ties) / self.games if self.games else 0.0

    def interval(self) -> str:
        return f"{self.lower:.0f} to {self.upper:.0f}"


class _Encoded:
    """Games as index arrays over ``models``, so a resample is a weighted count, not a copy."""

    def __init__(self, games: Sequence[Game]):
        self.models = sorted({m for g in games for m in (g.model_a, g.model_b)})
        index = {m: i for i, m in enumerate(self.models)}
        bad = [g.outcome for g in games if g.outcome not in _SCORES]
        if bad:
            raise ValueError(f"Vote outcome {bad[0]!r} is not one of a, b, tie")
        self.a = np.array([index[g.model_a] for g in games], dtype=int)
        self.b = np.array([index[g.model_b] for g in games], dtype=int)
        self.score_a = np.array([_SCORES[g.outcome][0] for g in games])

    def wins(self, weights: np.ndarray | None = None) -> np.ndarray:
        """wins[i, j]: how often i beat j (ties half to each), each game ``weights`` times."""
        w = np.ones(len(self.a)) if weights is None else weights
        wins = np.zeros((len(self.models), len(self.models)))
        np.add.at(wins, (self.a, self.b), w * self.score_a)
        np.add.at(wins, (self.b, self.a), w * (1.0 - self.score_a))
        return wins


def _solve(wins: np.ndarray, prior_games: float, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths maximising the likelihood, by Newton's method (it is concave).

    The prior adds a reference at log-strength 0 that every model tied ``prior_games``
    times. Without it the ratings are fixed only up to a shift, so the first model is
    pinned at 0 while solving and the mean set to 0 after.
    """
    n = len(wins)
    games = wins + wins.T
    if prior_games == 0 and np.any(wins.sum(axis=1) <= 0):
        raise ValueError("Without a prior every model needs at least half a win")
    free = slice(0, n) if prior_games > 0 else slice(1, n)
    s = np.zeros(n)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(s[None, :] - s[:, None]))  # P(i beats j)
        p_ref = 1.0 / (1.0 + np.exp(-s))
        grad = (wins - games * p).sum(axis=1) + prior_games * (0.5 - p_ref)
        curve = games * p * (1.0 - p)
        hessian = curve - np.diag(curve.sum(axis=1) + prior_games * p_ref * (1.0 - p_ref))
        step = np.zeros(n)
        step[free] = np.linalg.solve(hessian[free, free], -grad[free])
        step = np.clip(step, -2.0, 2.0)  # far from the optimum, a full step can overshoot
        s = s + step
        if np.max(np.abs(step)) < tol:
            break
    return s if prior_games > 0 else s - s.mean()


def bradley_terry(games: Sequence[Game], *, prior_games: float = PRIOR_GAMES) -> dict[str, float]:
    """Each model's rating (Elo scale, the reference at 1000); no games, no ratings."""
    encoded = _Encoded(games)
    if not encoded.models:
        return {}
    strengths = _solve(encoded.wins(), prior_games)
    return {
        m: BASE_RATING + SCALE * float(v) for m, v in zip(encoded.models, strengths, strict=True)
    }


def bootstrap_intervals(
    games: Sequence[Game],
    *,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = BOOTSTRAP_SEED,
    prior_games: float = PRIOR_GAMES,
) -> dict[str, tuple[float, float]]:
    """(2.5th, 97.5th) percentile of each rating over ``rounds`` resamples of the votes.

    A fixed ``seed`` makes the intervals a function of the votes alone, so a page reload
    shows the same numbers.
    """
    encoded = _Encoded(games)
    if not encoded.models:
        return {}
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(encoded.models)))
    for r in range(rounds):
        counts = np.bincount(rng.integers(0, len(games), size=len(games)), minlength=len(games))
        samples[r] = BASE_RATING + SCALE * _solve(encoded.wins(counts), prior_games)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return {m: (float(low[i]), float(high[i])) for i, m in enumerate(encoded.models)}


def standings(games: Sequence[Game], *, seed: int = BOOTSTRAP_SEED) -> list[Standing]:
    """Every model that played, best rating first, with intervals and win/loss/tie counts."""
    games = list(games)
    ratings = bradley_terry(games)
    intervals = bootstrap_intervals(games, seed=seed)
    record = {m: [0, 0, 0] for m in ratings}  # wins, losses, ties
    for game in games:
        a, b = record[game.model_a], record[game.model_b]
        if game.outcome == "a":
            a[0], b[1] = a[0] + 1, b[1] + 1
        elif game.outcome == "b":
            b[0], a[1] = b[0] + 1, a[1] + 1
        else:
            a[2], b[2] = a[2] + 1, b[2] + 1
    rows = [
        Standing(m, ratings[m], *intervals[m], games=sum(r), wins=r[0], losses=r[1], ties=r[2])
        for m, r in record.items()
    ]
    return sorted(rows, key=lambda s: (-s.rating, s.model))
