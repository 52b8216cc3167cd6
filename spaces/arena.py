"""Blind A/B votes between models, stored durably in SQLite, turned into win rates and Elo.

Votes are the record; ratings are derived by replaying every vote in the order it was
cast, so a rating can always be recomputed (and audited) from the database alone.
Each vote is written in its own transaction, so a crash loses at most the vote in flight.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

OUTCOMES = ("a", "b", "tie")
INITIAL_ELO = 1000.0
K_FACTOR = 32.0
# Enough for a reviewer's thorough session, too few for one page to swing the ratings.
DEFAULT_VOTES_PER_SESSION = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie')),
    prompt TEXT NOT NULL DEFAULT '',
    base_model TEXT
);
"""


def default_db_path() -> Path:
    """``LORADOCK_ARENA_DB``, else ``arena.sqlite`` in the app's data dir."""
    if os.environ.get("LORADOCK_ARENA_DB"):
        return Path(os.environ["LORADOCK_ARENA_DB"]).expanduser()
    # On a Hugging Face Space (SPACE_ID is set there), /data is the persistent volume
    # when one is attached; the app's own folder is wiped on every restart.
    if os.environ.get("SPACE_ID") and os.access("/data", os.W_OK):
        return Path("/data/loradock/arena.sqlite")
    home = os.environ.get("LORADOCK_HOME") or "~/.cache/loradock"
    return Path(home).expanduser() / "space" / "arena.sqlite"


def session_vote_limit(value: int | str | None = None) -> int:
    """The most votes one page session may cast: ``value``, else
    ``LORADOCK_ARENA_VOTES_PER_SESSION``, else 30; anything but a positive integer is refused."""
    if value is None:
        value = os.environ.get("LORADOCK_ARENA_VOTES_PER_SESSION", "").strip()
        value = value or DEFAULT_VOTES_PER_SESSION
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(
            f"LORADOCK_ARENA_VOTES_PER_SESSION={value!r} is not a positive whole number of "
            f"votes (default {DEFAULT_VOTES_PER_SESSION})."
        )
    return limit


@dataclass(frozen=True)
class Vote:
    model_a: str
    model_b: str
    outcome: str  # "a", "b" or "tie"
    prompt: str = ""
    base_model: str | None = None
    id: int | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class Standing:
    """One model's arena record."""

    model: str
    elo: float
    games: int
    wins: int
    losses: int
    ties: int

    @property
    def win_rate(self) -> float:
        """Ties count half, so a model that only ties sits at 0.5."""
        return (self.wins + 0.5 * self.ties) / self.games if self.games else 0.0


def expected_score(rating: float, opponent: float) -> float:
    return 1.0 / (1.0 + 10.0 ** ((opponent - rating) / 400.0))


def elo_update(
    rating_a: float, rating_b: float, outcome: str, *, k: float = K_FACTOR
) -> tuple[float, float]:
    """New (a, b) ratings after one game; ``outcome`` is "a", "b" or "tie"."""
    if outcome not in OUTCOMES:
        raise ValueError(f"Vote outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    score_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[outcome]
    delta = k * (score_a - expected_score(rating_a, rating_b))
    return rating_a + delta, rating_b - delta


def standings(votes: Iterable[Vote], *, k: float = K_FACTOR) -> list[Standing]:
    """Replay votes in order; best Elo first."""
    elo: dict[str, float] = {}
    record: dict[str, list[int]] = {}  # model -> [wins, losses, ties]
    for vote in votes:
        a, b = vote.model_a, vote.model_b
        ra, rb = elo.get(a, INITIAL_ELO), elo.get(b, INITIAL_ELO)
        elo[a], elo[b] = elo_update(ra, rb, vote.outcome, k=k)
        wa, wb = record.setdefault(a, [0, 0, 0]), record.setdefault(b, [0, 0, 0])
        if vote.outcome == "a":
            wa[0], wb[1] = wa[0] + 1, wb[1] + 1
        elif vote.outcome == "b":
            wb[0], wa[1] = wb[0] + 1, wa[1] + 1
        else:
            wa[2], wb[2] = wa[2] + 1, wb[2] + 1
    rows = [
        Standing(model=m, elo=elo[m], games=sum(r), wins=r[0], losses=r[1], ties=r[2])
        for m, r in record.items()
    ]
    return sorted(rows, key=lambda s: (-s.elo, s.model))


def pick_pair(models: Sequence[str], rng: random.Random | None = None) -> tuple[str, str]:
    """Two distinct models in random order (the order is what keeps the vote blind)."""
    unique = list(dict.fromkeys(models))
    if len(unique) < 2:
        raise ValueError(
            f"The arena needs two models to compare, got {unique!r}: pick a base model "
            "with at least one adapter."
        )
    a, b = (rng or random).sample(unique, 2)
    return a, b


class Arena:
    """The vote store. Safe to share between Gradio's worker threads."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the voter
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def record(self, vote: Vote) -> Vote:
        problems = []
        if vote.outcome not in OUTCOMES:
            problems.append(f"outcome {vote.outcome!r} is not one of {', '.join(OUTCOMES)}")
        if not vote.model_a or not vote.model_b:
            problems.append(f"both models must be named, got {vote.model_a!r}/{vote.model_b!r}")
        elif vote.model_a == vote.model_b:
            problems.append(f"a model cannot play itself ({vote.model_a!r})")
        if problems:
            raise ValueError("Vote refused: " + "; ".join(problems))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock, self._connect() as db:
            cur = db.execute(
                "INSERT INTO votes (created_at, model_a, model_b, outcome, prompt, base_model)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (created, vote.model_a, vote.model_b, vote.outcome, vote.prompt, vote.base_model),
            )
            vote_id = cur.lastrowid
        return Vote(
            vote.model_a, vote.model_b, vote.outcome, vote.prompt, vote.base_model, vote_id, created
        )

    def votes(self, *, base_model: str | None = None) -> list[Vote]:
        query = "SELECT model_a, model_b, outcome, prompt, base_model, id, created_at FROM votes"
        args: tuple = ()
        if base_model:
            query, args = query + " WHERE base_model = ?", (base_model,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [Vote(*row) for row in rows]

    def standings(self, *, base_model: str | None = None) -> list[Standing]:
        return standings(self.votes(base_model=base_model))
