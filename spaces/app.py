"""loradock Space: reviewers compare a base model and its LoRA adapters side by side.

Four tabs: Compare (2-4 models, one prompt, streamed outputs with latency and token
counts), Leaderboard (eval metrics from the registry beside the general-capability
columns and arena ratings), Browse (cards, lineage, revisions and aliases) and Arena
(blind A/B votes stored in SQLite). Everything comes from a loradock endpoint over HTTP
(``LORADOCK_ENDPOINT``, ``LORADOCK_API_KEY``; endpoints.py says which key goes where),
so this folder deploys on its own.

Run: ``python app.py [--endpoint URL] [--host H] [--port P]`` or ``loradock space run``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import Any

import gradio as gr

if __package__:
    from .arena import Arena, Vote, pick_pair, session_vote_limit
    from .client import AdapterRow, EndpointError, LoradockClient
    from .endpoints import Connection, EndpointPolicy
    from .layout import MAX_PANELS, build_blocks
    from .markup import md_code, md_text, toast_text
    from .streams import stream_side_by_side
    from .tables import (
        default_metric,
        leaderboard_frame,
        lineage_markdown,
        load_examples,
        plot_frame,
        revisions_frame,
        sort_frame,
        sortable_columns,
    )
else:  # run as a Space (``python app.py``): the sibling modules are plain top-level modules
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arena import Arena, Vote, pick_pair, session_vote_limit  # type: ignore[no-redef]
    from client import AdapterRow, EndpointError, LoradockClient  # type: ignore[no-redef]
    from endpoints import Connection, EndpointPolicy  # type: ignore[no-redef]
    from layout import MAX_PANELS, build_blocks  # type: ignore[no-redef]
    from markup import md_code, md_text, toast_text  # type: ignore[no-redef]
    from streams import stream_side_by_side  # type: ignore[no-redef]
    from tables import (  # type: ignore[no-redef]
        default_metric,
        leaderboard_frame,
        lineage_markdown,
        load_examples,
        plot_frame,
        revisions_frame,
        sort_frame,
        sortable_columns,
    )

ALL_TASKS = "(all tasks)"


def warn(message: str) -> str:
    """Raise ``message`` as a toast and return it as a status line, both inert."""
    gr.Warning(toast_text(message))
    return f"⚠️ {md_text(message)}"


class SpaceApp:
    """The handlers behind the page; ``layout.build_blocks`` lays them out."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        trusted_endpoints: list[str] | None = None,
        lock_endpoint: bool | None = None,
        arena_db: str | Path | None = None,
        votes_per_session: int | None = None,
        rng: random.Random | None = None,
    ):
        # The key stays on the server, and goes only where the policy allows it.
        self.policy = EndpointPolicy.create(
            endpoint=endpoint,
            api_key=api_key,
            trusted_endpoints=trusted_endpoints,
            locked=lock_endpoint,
        )
        self.endpoint = self.policy.endpoint
        self.votes_per_session = session_vote_limit(votes_per_session)
        self.arena = Arena(arena_db)
        self.examples = load_examples()
        self.rng = rng or random.Random()

    def connect(self, endpoint: str, api_key: str) -> tuple[Connection, LoradockClient]:
        """What the visitor typed, as a connection the policy allows (or an EndpointError)."""
        connection = self.policy.connect(endpoint, api_key)
        return connection, LoradockClient(connection.endpoint, api_key=connection.api_key)

    def client(self, endpoint: str, api_key: str) -> LoradockClient:
        return self.connect(endpoint, api_key)[1]

    # -- registry lists ---------------------------------------------------------------
    async def _rows(self, client: LoradockClient, base: str, task: str) -> list[AdapterRow]:
        task_filter = None if task in ("", ALL_TASKS, None) else task
        rows = await client.list_adapters(base=base or None, task=task_filter)
        return [r for r in rows if r.kind != "base"]

    async def refresh(self, endpoint: str, api_key: str, base: str | None, task: str | None):
        """Fill the base/task pickers and the model choices from the endpoint."""
        try:
            client = self.client(endpoint, api_key)
            served = await client.list_models()
            every_row = await client.list_adapters()
            bases = [m.id for m in served if not m.parent]
            bases += [r.base_model for r in every_row if r.base_model and r.kind != "base"]
            bases = list(dict.fromkeys(bases))
            base = base if base in bases else (bases[0] if bases else None)
            tasks = sorted({t for r in every_row if r.base_model == base for t in r.tasks})
            task = task if task in tasks else ALL_TASKS
            rows = await self._rows(client, base or "", task)
        except EndpointError as exc:
            keep = gr.update()
            return keep, keep, keep, keep, keep, warn(str(exc))
        choices = ([(f"{base} (base model)", base)] if base else []) + [
            (r.repo_id, r.repo_id) for r in rows
        ]
        adapters = [r.repo_id for r in rows]
        examples = self.examples.get(task, []) if task != ALL_TASKS else []
        examples = examples or [p for prompts in self.examples.values() for p in prompts]
        status = f"Connected: {len(adapters)} adapter(s) for {md_code(base)}" + (
            f", task {md_code(task)}." if task != ALL_TASKS else "."
        )
        return (
            gr.update(choices=bases, value=base),
            gr.update(choices=[ALL_TASKS, *tasks], value=task),
            gr.update(choices=choices, value=[]),
            gr.update(choices=adapters, value=adapters[0] if adapters else None),
            gr.update(choices=examples, value=None),
            status,
        )

    # -- Compare ----------------------------------------------------------------------
    async def compare(self, endpoint, api_key, selected, prompt, max_tokens):
        """Stream every selected model's answer into its own panel."""
        selected = list(selected or [])
        problem = None
        if not 2 <= len(selected) <= MAX_PANELS:
            problem = f"Pick 2 to {MAX_PANELS} models to compare (got {len(selected)})."
        elif not (prompt or "").strip():
            problem = "Type a prompt (or pick an example) first."
        if problem:
            yield [gr.update()] * (3 * MAX_PANELS) + [warn(problem)]
            return
        try:
            client = self.client(endpoint, api_key)
            stream = stream_side_by_side(client, selected, prompt, max_tokens=int(max_tokens))
            async for panels in stream:
                updates: list[Any] = []
                for i in range(MAX_PANELS):
                    updates.append(gr.update(visible=i < len(panels)))
                for i in range(MAX_PANELS):
                    p = panels[i] if i < len(panels) else None
                    updates.append(gr.update(value=p.text, label=p.model) if p else gr.update())
                for i in range(MAX_PANELS):
                    updates.append(_footer(panels[i]) if i < len(panels) else "")
                failed = [p for p in panels if p.error]
                done = all(p.done for p in panels)
                status = "Generating…" if not done else "Done."
                if failed and done:
                    status = warn(" | ".join(p.error or "" for p in failed))
                yield [*updates, status]
        except EndpointError as exc:
            yield [gr.update()] * (3 * MAX_PANELS) + [warn(str(exc))]

    # -- Leaderboard ------------------------------------------------------------------
    async def leaderboard(self, endpoint, api_key, base, task, sort_by, descending, metric):
        message, trusted = "", False
        try:
            connection, client = self.connect(endpoint, api_key)
            trusted = connection.trusted
            rows = await self._rows(client, base or "", task or ALL_TASKS)
            # The base model's own eval row is the yardstick its adapters are read against.
            # (A server that ignores ``kind`` answers adapter rows, which the filter drops.)
            everything = await client.list_adapters(kind="base")
            rows = [r for r in everything if r.kind == "base" and r.repo_id == base] + rows
        except EndpointError as exc:
            rows, message = [], warn(f"{exc} (showing arena results only)")
        task_name = None if task in (None, "", ALL_TASKS) else task
        # The shared arena is about the Space's own endpoint: another endpoint's names
        # are not the models its votes were cast on.
        standings = self.arena.standings(base_model=base or None) if trusted else []
        frame = leaderboard_frame(rows, standings, task=task_name, base_model=base)
        columns = sortable_columns(frame)
        metric = metric if metric in frame.columns else default_metric(frame, task_name)
        sort_by = sort_by if sort_by in columns else metric
        frame = sort_frame(frame, sort_by, bool(descending))
        votes = sum(s.games for s in standings) // 2
        caption = f"{len(frame)} model(s) · sorted by {md_code(sort_by)} · " + (
            f"{votes} arena vote(s)" + (f" for {md_code(base)}" if base else "")
            if trusted
            else "arena results belong to the Space's configured endpoint"
        )
        return (
            caption,
            frame,
            gr.update(value=plot_frame(frame, metric), y_title=metric),
            gr.update(choices=columns, value=sort_by),
            gr.update(choices=[c for c in columns if c != "model"], value=metric),
            message or gr.update(),
        )

    # -- Browse -----------------------------------------------------------------------
    async def browse(self, endpoint, api_key, repo_id, base, task, *, announce: bool = True):
        """The card, lineage and revisions of one adapter.

        Failures are written where the card would be; ``announce`` also raises them to the
        status line, which only a reviewer's own pick should do (not a background reload).
        """
        if not repo_id:
            return "Pick an adapter.", "", None, gr.update()
        try:
            client = self.client(endpoint, api_key)
            card = await client.adapter_card(repo_id)
            rows = await self._rows(client, base or "", task or ALL_TASKS)
        except EndpointError as exc:
            status = warn(str(exc)) if announce else gr.update()
            return f"⚠️ {md_text(exc)}", "", None, status
        row = next((r for r in rows if r.repo_id == repo_id), None)
        # The card itself is shown as the card (Gradio sanitises its HTML); every value
        # lifted out of it into lineage tables is escaped there.
        body = card.markdown or "_This adapter has no model card._"
        # The status line keeps what the reviewer did last; a card loading is no news.
        return body, lineage_markdown(row, card), revisions_frame(row, card), gr.update()

    async def browse_quietly(self, endpoint, api_key, repo_id, base, task):
        return await self.browse(endpoint, api_key, repo_id, base, task, announce=False)

    # -- Arena ------------------------------------------------------------------------
    async def battle(self, endpoint, api_key, base, task, prompt, max_tokens):
        """Two random models (base included), names hidden until the vote."""
        hidden = "Names are hidden until you vote."
        try:
            if not (prompt or "").strip():
                raise ValueError("Type a prompt for the arena first.")
            connection, client = self.connect(endpoint, api_key)
            if not connection.trusted:
                raise ValueError(
                    "The arena runs on the Space's configured endpoint only (its votes are "
                    "shared): clear the endpoint box to battle, or use Compare here."
                )
            rows = await self._rows(client, base or "", task or ALL_TASKS)
            # Only what the endpoint serves right now: a battle with a dead side is no battle.
            served = {m.id for m in await client.list_models()}
            candidates = [base, *(r.repo_id for r in rows if r.repo_id in served)]
            a, b = pick_pair(candidates, self.rng)
        except (EndpointError, ValueError) as exc:
            yield "", "", "", "", hidden, None, warn(str(exc))
            return
        pending = {"a": a, "b": b, "prompt": prompt, "base": base, "ok": False}
        async for pa, pb in stream_side_by_side(client, [a, b], prompt, max_tokens=max_tokens):
            done = pa.done and pb.done
            failed = [p.error for p in (pa, pb) if p.error]
            pending["ok"] = done and not failed
            status = "Generating…" if not done else "Vote: which answer is better?"
            if failed and done:
                # Errors name the model, so the battle is void: no vote on a broken pair.
                status = warn("This battle failed and cannot be voted on: " + " | ".join(failed))
            yield (
                pa.text,
                pb.text,
                "" if pa.error else pa.stats.summary(),
                "" if pb.error else pb.stats.summary(),
                hidden,
                dict(pending) if pending["ok"] else None,
                status,
            )

    async def vote(
        self, outcome, pending, votes_cast, endpoint, api_key, base, task, sort_by, desc, metric
    ):
        """Record a vote on the finished battle; returns the reveal, the board and the count."""
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
            a, b = pending["a"], pending["b"]
            self.arena.record(Vote(a, b, outcome, pending["prompt"], pending["base"]))
            votes_cast += 1
            verdict = {"a": "A wins", "b": "B wins", "tie": "a tie"}[outcome]
            reveal = f"You voted **{verdict}**. A was {md_code(a)}, B was {md_code(b)}."
            status = "Vote recorded. Start another battle!"
        board = await self.leaderboard(endpoint, api_key, base, task, sort_by, desc, metric)
        return (reveal, None, *board[:5], status, votes_cast)


def _footer(panel: Any) -> str:
    return f"⚠️ {md_text(panel.error)}" if panel.error else panel.footer()


def build_app(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    trusted_endpoints: list[str] | None = None,
    lock_endpoint: bool | None = None,
    arena_db: str | Path | None = None,
    votes_per_session: int | None = None,
) -> gr.Blocks:
    """The whole Space as a ``gr.Blocks`` (not launched); None reads the environment."""
    space = SpaceApp(
        endpoint=endpoint,
        api_key=api_key,
        trusted_endpoints=trusted_endpoints,
        lock_endpoint=lock_endpoint,
        arena_db=arena_db,
        votes_per_session=votes_per_session,
    )
    return build_blocks(space)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=None, help="loradock endpoint URL")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    try:
        app = build_app(endpoint=args.endpoint)
    except (ValueError, EndpointError) as exc:  # a setting that cannot work: say which
        parser.exit(2, f"loradock Space: {exc}\n")
    app.queue(default_concurrency_limit=8).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
