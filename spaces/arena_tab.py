"""The Arena tab's handlers: a blind battle between two models, then one vote on it.

A mixin of ``SpaceApp`` (app.py), which supplies ``connect``, ``_rows``, ``leaderboard``,
``arena``, ``rng`` and ``votes_per_session``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

try:
    from .arena import ARENA_TEMPERATURE, DuplicateVoteError, Vote, new_battle
    from .client import EndpointError
    from .markup import md_code
    from .notices import warn
    from .streams import stream_side_by_side
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from arena import ARENA_TEMPERATURE, DuplicateVoteError, Vote, new_battle  # type: ignore[no-redef]
    from client import EndpointError  # type: ignore[no-redef]
    from markup import md_code  # type: ignore[no-redef]
    from notices import warn  # type: ignore[no-redef]
    from streams import stream_side_by_side  # type: ignore[no-redef]

HIDDEN = "Names are hidden until you vote."


class ArenaTab:
    """Battles and votes; the vote limit counts per page session (a ``gr.State``)."""

    connect: Any
    _rows: Any
    leaderboard: Any
    arena: Any
    rng: Any
    votes_per_session: int

    async def battle(self, endpoint, api_key, base, task, prompt, max_tokens):
        """Two random models (base included), names hidden until the vote.

        Both answers are sampled with the battle's own seed: Compare's greedy answers
        cannot be matched against them to unmask the models.
        """
        try:
            if not (prompt or "").strip():
                raise ValueError("Type a prompt for the arena first.")
            connection, client = self.connect(endpoint, api_key)
            if not connection.trusted:
                raise ValueError(
                    "The arena runs on the Space's configured endpoint only (its votes are "
                    "shared): clear the endpoint box to battle, or use Compare here."
                )
            rows = await self._rows(client, base or "", task)
            # Only what the endpoint serves right now: a battle with a dead side is no battle.
            served = {m.id for m in await client.list_models()}
            candidates = [base, *(r.repo_id for r in rows if r.repo_id in served)]
            battle = new_battle(candidates, prompt, base, self.rng)
        except (EndpointError, ValueError) as exc:
            yield "", "", "", "", HIDDEN, None, warn(str(exc))
            return
        stream = stream_side_by_side(
            client,
            [battle.model_a, battle.model_b],
            prompt,
            max_tokens=max_tokens,
            temperature=ARENA_TEMPERATURE,
            seed=battle.seed,
        )
        async for pa, pb in stream:
            done = pa.done and pb.done
            failed = [p.error for p in (pa, pb) if p.error]
            status = "Generating…" if not done else "Vote: which answer is better?"
            if failed and done:
                # Errors name the model, so the battle is void: no vote on a broken pair.
                status = warn("This battle failed and cannot be voted on: " + " | ".join(failed))
            yield (
                pa.text,
                pb.text,
                "" if pa.error else pa.stats.summary(),
                "" if pb.error else pb.stats.summary(),
                HIDDEN,
                battle if done and not failed else None,
                status,
            )

    async def vote(
        self, outcome, pending, votes_cast, endpoint, api_key, base, task, sort_by, desc, metric
    ):
        """Record a vote on the finished battle; returns the reveal, the board and the count.

        The battle stays in the session after the vote, so a second vote on it reaches
        the database and is refused there (one vote per battle id).
        """
        votes_cast = int(votes_cast or 0)
        reveal, status = gr.update(), None
        if not pending:
            status = warn("Start a battle and let both answers finish before voting.")
        elif votes_cast >= self.votes_per_session:
            status = warn(
                f"Vote limit reached: one session may cast {self.votes_per_session} votes "
                "(LORADOCK_ARENA_VOTES_PER_SESSION). Thank you for reviewing!"
            )
        else:
            try:
                self.arena.record(Vote.on(pending, outcome))
            except DuplicateVoteError as exc:
                status = warn(str(exc))
            else:
                votes_cast += 1
                verdict = {"a": "A wins", "b": "B wins", "tie": "a tie"}[outcome]
                reveal = (
                    f"You voted **{verdict}**. A was {md_code(pending.model_a)}, "
                    f"B was {md_code(pending.model_b)}."
                )
                status = "Vote recorded. Start another battle!"
        board = await self.leaderboard(endpoint, api_key, base, task, sort_by, desc, metric)
        return (reveal, *board[:-1], status, votes_cast)
