"""loradock Space: reviewers compare a base model and its LoRA adapters side by side.

Four tabs: Compare (2-4 models, one prompt, streamed outputs with latency and token
counts), Leaderboard (eval metrics from the registry beside the general-capability
columns and arena ratings), Browse (cards, lineage, revisions and aliases) and Arena
(blind A/B votes stored in SQLite). Everything comes from a loradock endpoint over HTTP
(``LORADOCK_ENDPOINT``, ``LORADOCK_API_KEY``), so this folder deploys on its own.

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
    from .arena import Arena, Vote, pick_pair
    from .client import AdapterRow, EndpointError, LoradockClient
    from .layout import MAX_PANELS, build_blocks
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
    from arena import Arena, Vote, pick_pair  # type: ignore[no-redef]
    from client import AdapterRow, EndpointError, LoradockClient  # type: ignore[no-redef]
    from layout import MAX_PANELS, build_blocks  # type: ignore[no-redef]
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


class SpaceApp:
    """The handlers behind the page; ``layout.build_blocks`` lays them out."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        arena_db: str | Path | None = None,
        rng: random.Random | None = None,
    ):
        self.endpoint = endpoint or os.environ.get("LORADOCK_ENDPOINT") or ""
        # The key stays on the server: the page only ever sends a key the reviewer typed.
        self._api_key = api_key or os.environ.get("LORADOCK_API_KEY") or None
        self.arena = Arena(arena_db)
        self.examples = load_examples()
        self.rng = rng or random.Random()

    def client(self, endpoint: str, api_key: str) -> LoradockClient:
        return LoradockClient(endpoint or self.endpoint, api_key=api_key or self._api_key)

    # -- registry lists ---------------------------------------------------------------
    async def _rows(self, endpoint: str, api_key: str, base: str, task: str) -> list[AdapterRow]:
        task_filter = None if task in ("", ALL_TASKS, None) else task
        rows = await self.client(endpoint, api_key).list_adapters(
            base=base or None, task=task_filter
        )
        return [r for r in rows if r.kind != "base"]

    async def refresh(self, endpoint: str, api_key: str, base: str | None, task: str | None):
        """Fill the base/task pickers and the model choices from the endpoint."""
        try:
            client = self.client(endpoint, api_key)
            served = await client.list_models()
            every_row = await client.list_adapters()
        except EndpointError as exc:
            return self._refresh_failed(str(exc))
        bases = [m.id for m in served if not m.parent]
        bases += [r.base_model for r in every_row if r.base_model and r.kind != "base"]
        bases = list(dict.fromkeys(bases))
        base = base if base in bases else (bases[0] if bases else None)
        tasks = sorted({t for r in every_row if r.base_model == base for t in r.tasks})
        task = task if task in tasks else ALL_TASKS
        try:
            rows = await self._rows(endpoint, api_key, base or "", task)
        except EndpointError as exc:
            return self._refresh_failed(str(exc))
        choices = ([(f"{base} (base model)", base)] if base else []) + [
            (r.repo_id, r.repo_id) for r in rows
        ]
        adapters = [r.repo_id for r in rows]
        examples = self.examples.get(task, []) if task != ALL_TASKS else []
        examples = examples or [p for prompts in self.examples.values() for p in prompts]
        status = f"Connected: {len(adapters)} adapter(s) for `{base}`" + (
            f", task `{task}`." if task != ALL_TASKS else "."
        )
        return (
            gr.update(choices=bases, value=base),
            gr.update(choices=[ALL_TASKS, *tasks], value=task),
            gr.update(choices=choices, value=[]),
            gr.update(choices=adapters, value=adapters[0] if adapters else None),
            gr.update(choices=examples, value=None),
            status,
        )

    def _refresh_failed(self, message: str):
        gr.Warning(message)
        keep = gr.update()
        return keep, keep, keep, keep, keep, f"⚠️ {message}"

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
            gr.Warning(problem)
            yield [gr.update()] * (3 * MAX_PANELS) + [f"⚠️ {problem}"]
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
                    updates.append(panels[i].footer() if i < len(panels) else "")
                failed = [p for p in panels if p.error]
                done = all(p.done for p in panels)
                status = "Generating…" if not done else "Done."
                if failed and done:
                    status = "⚠️ " + " | ".join(p.error or "" for p in failed)
                    for p in failed:
                        gr.Warning(p.error or "")
                yield [*updates, status]
        except EndpointError as exc:
            gr.Warning(str(exc))
            yield [gr.update()] * (3 * MAX_PANELS) + [f"⚠️ {exc}"]

    # -- Leaderboard ------------------------------------------------------------------
    async def leaderboard(self, endpoint, api_key, base, task, sort_by, descending, metric):
        message = ""
        try:
            rows = await self._rows(endpoint, api_key, base or "", task or ALL_TASKS)
            # The base model's own eval row is the yardstick its adapters are read against.
            # (A server that ignores ``kind`` answers adapter rows, which the filter drops.)
            everything = await self.client(endpoint, api_key).list_adapters(kind="base")
            rows = [r for r in everything if r.kind == "base" and r.repo_id == base] + rows
        except EndpointError as exc:
            rows, message = [], f"⚠️ {exc} (showing arena results only)"
            gr.Warning(str(exc))
        task_name = None if task in (None, "", ALL_TASKS) else task
        standings = self.arena.standings(base_model=base or None)
        frame = leaderboard_frame(rows, standings, task=task_name, base_model=base)
        columns = sortable_columns(frame)
        metric = metric if metric in frame.columns else default_metric(frame, task_name)
        sort_by = sort_by if sort_by in columns else metric
        frame = sort_frame(frame, sort_by, bool(descending))
        status = message or gr.update()
        votes = sum(s.games for s in standings) // 2
        caption = f"{len(frame)} model(s) · sorted by `{sort_by}` · {votes} arena vote(s)" + (
            f" for `{base}`" if base else ""
        )
        return (
            caption,
            frame,
            gr.update(value=plot_frame(frame, metric), y_title=metric),
            gr.update(choices=columns, value=sort_by),
            gr.update(choices=[c for c in columns if c != "model"], value=metric),
            status,
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
            rows = await self._rows(endpoint, api_key, base or "", task or ALL_TASKS)
        except EndpointError as exc:
            if announce:
                gr.Warning(str(exc))
            status = f"⚠️ {exc}" if announce else gr.update()
            return f"⚠️ {exc}", "", None, status
        row = next((r for r in rows if r.repo_id == repo_id), None)
        body = card.markdown or "_This adapter has no model card._"
        # The status line keeps what the reviewer did last; a card loading is no news.
        return body, lineage_markdown(row, card), revisions_frame(row, card), gr.update()

    async def browse_quietly(self, endpoint, api_key, repo_id, base, task):
        return await self.browse(endpoint, api_key, repo_id, base, task, announce=False)

    # -- Arena ------------------------------------------------------------------------
    async def battle(self, endpoint, api_key, base, task, prompt, max_tokens):
        """Two random models (base included), names hidden until the vote."""
        hidden = "Names are hidden until you vote."
        if not (prompt or "").strip():
            gr.Warning("Type a prompt for the arena first.")
            yield "", "", "", "", hidden, None, "⚠️ Type a prompt for the arena first."
            return
        try:
            rows = await self._rows(endpoint, api_key, base or "", task or ALL_TASKS)
            # Only what the endpoint serves right now: a battle with a dead side is no battle.
            served = {m.id for m in await self.client(endpoint, api_key).list_models()}
            candidates = [base, *(r.repo_id for r in rows if r.repo_id in served)]
            a, b = pick_pair(candidates, self.rng)
        except (EndpointError, ValueError) as exc:
            gr.Warning(str(exc))
            yield "", "", "", "", hidden, None, f"⚠️ {exc}"
            return
        pending = {"a": a, "b": b, "prompt": prompt, "base": base, "ok": False}
        client = self.client(endpoint, api_key)
        async for pa, pb in stream_side_by_side(client, [a, b], prompt, max_tokens=max_tokens):
            done = pa.done and pb.done
            failed = [p.error for p in (pa, pb) if p.error]
            pending["ok"] = done and not failed
            status = "Generating…" if not done else "Vote: which answer is better?"
            if failed and done:
                # Errors name the model, so the battle is void: no vote on a broken pair.
                status = "⚠️ This battle failed and cannot be voted on: " + " | ".join(failed)
                gr.Warning(status)
            yield (
                pa.text,
                pb.text,
                "" if pa.error else pa.stats.summary(),
                "" if pb.error else pb.stats.summary(),
                hidden,
                dict(pending) if pending["ok"] else None,
                status,
            )

    async def vote(self, outcome, pending, endpoint, api_key, base, task, sort_by, desc, metric):
        if not pending:
            message = "Start a battle and let both answers finish before voting."
            gr.Warning(message)
            board = await self.leaderboard(endpoint, api_key, base, task, sort_by, desc, metric)
            return (gr.update(), None, *board[:5], f"⚠️ {message}")
        self.arena.record(
            Vote(
                model_a=pending["a"],
                model_b=pending["b"],
                outcome=outcome,
                prompt=pending["prompt"],
                base_model=pending["base"],
            )
        )
        verdict = {"a": "A wins", "b": "B wins", "tie": "a tie"}[outcome]
        reveal = f"You voted **{verdict}**. A was `{pending['a']}`, B was `{pending['b']}`."
        board = await self.leaderboard(endpoint, api_key, base, task, sort_by, desc, metric)
        return (reveal, None, *board[:5], "Vote recorded. Start another battle!")


def build_app(
    *, endpoint: str | None = None, api_key: str | None = None, arena_db: str | Path | None = None
) -> gr.Blocks:
    """The whole Space as a ``gr.Blocks`` (not launched)."""
    space = SpaceApp(endpoint=endpoint, api_key=api_key, arena_db=arena_db)
    return build_blocks(space)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=None, help="loradock endpoint URL")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    app = build_app(endpoint=args.endpoint)
    app.queue(default_concurrency_limit=8).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
