"""loradock Space: reviewers compare a base model and its LoRA adapters side by side.

Four tabs: Compare (2-4 models, one prompt, streamed outputs with latency and token
counts, each answer's departures from the base's highlighted), Leaderboard (eval metrics
from the registry, the base model's own row and each adapter's change against it, arena
ratings with intervals, CSV), Browse (cards with their images, lineage, revisions and
aliases) and Arena (blind A/B votes on sampled answers, stored in SQLite and copied to a
dataset repo). Everything comes from a loradock endpoint over HTTP (``LORADOCK_ENDPOINT``,
``LORADOCK_API_KEY``; endpoints.py says which key goes where), so this folder deploys on
its own.

Run: ``python app.py [--endpoint URL] [--host H] [--port P]`` or ``loradock space run``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

if __package__:
    from .arena import Arena, session_vote_limit
    from .arena_tab import ArenaTab
    from .browse_tab import BrowseTab
    from .client import EndpointError, LoradockClient
    from .compare_view import changed_share, expected_answer, load_examples, word_diff
    from .endpoints import Connection, EndpointPolicy
    from .layout import CSS, MAX_PANELS, build_blocks
    from .markup import md_code, md_text
    from .notices import warn
    from .records import AdapterRow
    from .streams import stream_side_by_side
    from .tables import (
        default_metric,
        leaderboard_csv,
        leaderboard_frame,
        plot_frame,
        sort_frame,
        sortable_columns,
        styled,
        version_caption,
    )
    from .vote_log import open_vote_log
else:  # run as a Space (``python app.py``): the sibling modules are plain top-level modules
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arena import Arena, session_vote_limit  # type: ignore[no-redef]
    from arena_tab import ArenaTab  # type: ignore[no-redef]
    from browse_tab import BrowseTab  # type: ignore[no-redef]
    from client import EndpointError, LoradockClient  # type: ignore[no-redef]
    from compare_view import (  # type: ignore[no-redef]
        changed_share,
        expected_answer,
        load_examples,
        word_diff,
    )
    from endpoints import Connection, EndpointPolicy  # type: ignore[no-redef]
    from layout import CSS, MAX_PANELS, build_blocks  # type: ignore[no-redef]
    from markup import md_code, md_text  # type: ignore[no-redef]
    from notices import warn  # type: ignore[no-redef]
    from records import AdapterRow  # type: ignore[no-redef]
    from streams import stream_side_by_side  # type: ignore[no-redef]
    from tables import (  # type: ignore[no-redef]
        default_metric,
        leaderboard_csv,
        leaderboard_frame,
        plot_frame,
        sort_frame,
        sortable_columns,
        styled,
        version_caption,
    )
    from vote_log import open_vote_log  # type: ignore[no-redef]


ALL_TASKS = "(all tasks)"


class SpaceApp(ArenaTab, BrowseTab):
    """The handlers behind the page; ``layout.build_blocks`` lays them out."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        trusted_endpoints: list[str] | None = None,
        lock_endpoint: bool | None = None,
        arena_db: str | Path | None = None,
        arena_dataset: str | None = None,
        arena_votes_dir: str | Path | None = None,
        arena_hub: str | Path | None = None,
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
        log = open_vote_log(arena_dataset, arena_votes_dir, arena_hub)
        self.arena = Arena(arena_db, log=log)
        self.examples = load_examples()
        self.rng = rng or random.Random()
        self.csv_dir = Path(tempfile.mkdtemp(prefix="loradock-leaderboard-"))

    def connect(self, endpoint: str, api_key: str) -> tuple[Connection, LoradockClient]:
        """What the visitor typed, as a connection the policy allows (or an EndpointError)."""
        connection = self.policy.connect(endpoint, api_key)
        return connection, LoradockClient(connection.endpoint, api_key=connection.api_key)

    def client(self, endpoint: str, api_key: str) -> LoradockClient:
        return self.connect(endpoint, api_key)[1]

    def close(self) -> None:
        """Commit the votes still staged for the dataset repo (call when the Space stops)."""
        if self.arena.log is not None:
            self.arena.log.close()

    # -- registry lists ---------------------------------------------------------------
    async def _rows(self, client: LoradockClient, base: str, task: str | None) -> list[AdapterRow]:
        """The adapters of ``base`` (for ``task``; all of them for none or ALL_TASKS)."""
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
        examples = examples or [e for items in self.examples.values() for e in items]
        examples = [e.prompt for e in examples]
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
    def expected(self, prompt: str | None) -> str:
        """The expected answer of a shipped example prompt, else nothing."""
        answer = expected_answer(self.examples, prompt)
        return "" if answer is None else f"**Expected answer:** {md_code(answer)}"

    def pick_example(self, prompt: str | None) -> tuple[str, str]:
        return prompt or "", self.expected(prompt)

    async def compare(self, endpoint, api_key, base, selected, prompt, max_tokens):
        """Stream every selected model's answer into its own panel; once all are done,
        mark where each answer departs from the base model's."""
        selected = list(selected or [])
        problem = None
        if not 2 <= len(selected) <= MAX_PANELS:
            problem = f"Pick 2 to {MAX_PANELS} models to compare (got {len(selected)})."
        elif not (prompt or "").strip():
            problem = "Type a prompt (or pick an example) first."
        if problem:
            yield [gr.update()] * (4 * MAX_PANELS + 1) + [warn(problem)]
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
                done = all(p.done for p in panels)
                updates += _diffs(panels, base, done)
                failed = [p for p in panels if p.error]
                status = "Generating…" if not done else "Done."
                if failed and done:
                    status = warn(" | ".join(p.error or "" for p in failed))
                yield [*updates, self.expected(prompt), status]
        except EndpointError as exc:
            yield [gr.update()] * (4 * MAX_PANELS + 1) + [warn(str(exc))]

    # -- Leaderboard ------------------------------------------------------------------
    async def leaderboard(self, endpoint, api_key, base, task, sort_by, descending, metric):
        message, trusted = "", False
        try:
            connection, client = self.connect(endpoint, api_key)
            trusted = connection.trusted
            rows = await self._rows(client, base or "", task)
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
        csv = _csv_file(frame, self.csv_dir)
        caption = f"{len(frame)} model(s) · sorted by {md_code(sort_by)} · " + (
            f"{votes} arena vote(s)" + (f" for {md_code(base)}" if base else "")
            if trusted
            else "arena results belong to the Space's configured endpoint"
        )
        versions = version_caption(rows, frame)
        caption += f"\n\n{versions}" if versions else ""
        return (
            caption,
            styled(frame),
            gr.update(value=plot_frame(frame, metric), y_title=metric),
            gr.update(choices=columns, value=sort_by),
            gr.update(choices=[c for c in columns if c != "model"], value=metric),
            csv,
            message or gr.update(),
        )


def _footer(panel: Any) -> str:
    return f"⚠️ {md_text(panel.error)}" if panel.error else panel.footer()


def _diffs(panels: list[Any], base: str | None, done: bool) -> list[Any]:
    """Each panel's highlighted departures from the base's answer, once all are done."""
    reference = next((p for p in panels if p.model == base and not p.error), None)
    updates = []
    for i in range(MAX_PANELS):
        p = panels[i] if i < len(panels) else None
        show = done and reference is not None and p is not None and p is not reference
        show = show and not p.error
        if not show:
            updates.append(gr.update(value=None, visible=False))
            continue
        pieces = word_diff(reference.text, p.text)
        label = f"Against {reference.model}'s answer: {changed_share(pieces):.0%} differs"
        updates.append(gr.update(value=pieces, visible=True, label=label))
    return updates


def _csv_file(frame: Any, folder: Path) -> str:
    """The table as a CSV file the download button serves (Gradio copies it to its cache).

    Named by its content, so concurrent sessions never overwrite each other's file and
    the folder holds one file per distinct table, not one per click.
    """
    text = leaderboard_csv(frame)
    path = folder / f"leaderboard-{hashlib.sha256(text.encode()).hexdigest()[:16]}.csv"
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    return str(path)


def build_app(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    trusted_endpoints: list[str] | None = None,
    lock_endpoint: bool | None = None,
    arena_db: str | Path | None = None,
    arena_dataset: str | None = None,
    arena_votes_dir: str | Path | None = None,
    arena_hub: str | Path | None = None,
    votes_per_session: int | None = None,
) -> gr.Blocks:
    """The whole Space as a ``gr.Blocks`` (not launched); None reads the environment."""
    space = SpaceApp(
        endpoint=endpoint,
        api_key=api_key,
        trusted_endpoints=trusted_endpoints,
        lock_endpoint=lock_endpoint,
        arena_db=arena_db,
        arena_dataset=arena_dataset,
        arena_votes_dir=arena_votes_dir,
        arena_hub=arena_hub,
        votes_per_session=votes_per_session,
    )
    blocks = build_blocks(space)
    blocks.loradock_space = space  # so whoever launches it can ``close()`` it when done
    return blocks


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
    try:
        app.queue(default_concurrency_limit=8).launch(
            server_name=args.host, server_port=args.port, css=CSS
        )
    finally:  # launch returns on Ctrl-C: the votes still staged go to the dataset repo
        app.loradock_space.close()


if __name__ == "__main__":
    main()
