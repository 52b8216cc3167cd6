"""Blind A/B votes between models: battles, the SQLite vote store, and its durable copy.

Votes are the record; ratings are derived from all of them at once (ratings.py), so a
rating can always be recomputed (and audited) from the database alone. Each vote is
written in its own transaction, so a crash loses at most the vote in flight. Each battle
has an id and a sampling seed: the database takes one vote per battle id, and both
answers are sampled with the battle's seed, so they differ from Compare's greedy answers
(which would give the models away) yet can be reproduced.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

try:
    from .ratings import Game, Standing, standings
    from .vote_log import VoteLog
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from ratings import Game, Standing, standings  # type: ignore[no-redef]
    from vote_log import VoteLog  # type: ignore[no-redef]

OUTCOMES = ("a", "b", "tie")
# Enough for a reviewer's thorough session, too few for one page to swing the ratings.
DEFAULT_VOTES_PER_SESSION = 30
# Sampled, not greedy: greedy answers are the ones Compare shows, which would unmask them.
ARENA_TEMPERATURE = 0.8
_log = logging.getLogger(__name__)

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
# Added at open to a table that lacks them (a file made without battle ids); votes
# without an id (NULL) never collide in the unique index.
_BATTLE_COLUMNS = {"battle_id": "TEXT", "seed": "INTEGER"}
_BATTLE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS votes_battle_id ON votes (battle_id)"
_COLUMNS = "model_a, model_b, outcome, prompt, base_model, battle_id, seed, id, created_at"


class DuplicateVoteError(ValueError):
    """The battle already has its vote."""


@dataclass(frozen=True)
class Battle:
    """Two models on one prompt; ``id`` and ``seed`` are drawn fresh for each battle."""

    model_a: str
    model_b: str
    prompt: str
    base_model: str | None
    id: str
    seed: int


def new_battle(
    models: Sequence[str], prompt: str, base_model: str | None, rng: random.Random
) -> Battle:
    a, b = pick_pair(models, rng)
    return Battle(a, b, prompt, base_model, id=uuid.uuid4().hex, seed=rng.randrange(2**31))


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
    battle_id: str | None = None
    seed: int | None = None
    id: int | None = None
    created_at: str | None = None

    @classmethod
    def on(cls, battle: Battle, outcome: str) -> Vote:
        return cls(
            battle.model_a,
            battle.model_b,
            outcome,
            battle.prompt,
            battle.base_model,
            battle.id,
            battle.seed,
        )


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


def _problems(vote: Vote) -> list[str]:
    problems = []
    if vote.outcome not in OUTCOMES:
        problems.append(f"outcome {vote.outcome!r} is not one of {', '.join(OUTCOMES)}")
    if not vote.model_a or not vote.model_b:
        problems.append(f"both models must be named, got {vote.model_a!r}/{vote.model_b!r}")
    elif vote.model_a == vote.model_b:
        problems.append(f"a model cannot play itself ({vote.model_a!r})")
    return problems


class Arena:
    """The vote store (SQLite, plus the durable ``log`` when one is configured).

    Safe to share between Gradio's worker threads. At start, votes in the log that the
    database lacks are read in, so a Space rebuilt on a fresh disk keeps its votes.
    """

    def __init__(self, path: str | Path | None = None, *, log: VoteLog | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(_SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(votes)")}
            for column, kind in _BATTLE_COLUMNS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE votes ADD COLUMN {column} {kind}")
            db.execute(_BATTLE_INDEX)
        self.restored = self._restore() if log is not None else 0

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the voter
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def _insert(self, db: sqlite3.Connection, vote: Vote, created: str) -> int | None:
        cur = db.execute(
            "INSERT INTO votes (created_at, model_a, model_b, outcome, prompt, base_model,"
            " battle_id, seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                created,
                vote.model_a,
                vote.model_b,
                vote.outcome,
                vote.prompt,
                vote.base_model,
                vote.battle_id,
                vote.seed,
            ),
        )
        return cur.lastrowid

    def _restore(self) -> int:
        """Read the log's votes the database lacks; a log that cannot be read is reported."""
        try:
            logged = self.log.read_all()  # type: ignore[union-attr]
        except Exception as exc:  # the Space still starts; the votes stay in the log
            _log.warning("Could not read the arena votes from %s: %s", self.log.describe(), exc)
            return 0
        fields = set(Vote.__dataclass_fields__) - {"id"}
        added = 0
        with self._lock, self._connect() as db:
            for item in logged:
                vote = Vote(**{k: v for k, v in item.items() if k in fields})
                if _problems(vote) or not vote.battle_id:
                    continue
                try:
                    self._insert(db, vote, vote.created_at or "")
                    added += 1
                except sqlite3.IntegrityError:  # already here: same battle id
                    continue
        _log.info("Read %d vote(s) the database lacked from %s", added, self.log.describe())
        return added

    def record(self, vote: Vote) -> Vote:
        problems = _problems(vote)
        if problems:
            raise ValueError("Vote refused: " + "; ".join(problems))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            try:
                with self._connect() as db:
                    vote_id = self._insert(db, vote, created)
            except sqlite3.IntegrityError:
                raise DuplicateVoteError(
                    "This battle already has its vote: start a new battle to vote again."
                ) from None
        stored = Vote(**{**asdict(vote), "id": vote_id, "created_at": created})
        if self.log is not None:
            try:
                self.log.append({k: v for k, v in asdict(stored).items() if k != "id"})
            except OSError as exc:  # the vote is in the database; the copy catches up never
                _log.warning(
                    "Vote %s not copied to %s: %s", vote.battle_id, self.log.describe(), exc
                )
        return stored

    def votes(self, *, base_model: str | None = None) -> list[Vote]:
        query, args = f"SELECT {_COLUMNS} FROM votes", ()
        if base_model:
            query, args = query + " WHERE base_model = ?", (base_model,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [Vote(*row) for row in rows]

    def standings(self, *, base_model: str | None = None) -> list[Standing]:
        games = [Game(v.model_a, v.model_b, v.outcome) for v in self.votes(base_model=base_model)]
        return standings(games)
