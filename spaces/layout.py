"""The page: where each control sits and which handler of ``SpaceApp`` each event calls.

Kept apart from the handlers (app.py) so the numbers and messages can be read without
the widget tree, and the widget tree without the logic. Every control a test drives has
a stable ``elem_id``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

MAX_PANELS = 4  # Compare shows 2 to 4 models side by side
# Passed to ``launch(css=CSS)``. Table headers wrap between words only: "extraction/field_accuracy" stays one line
# instead of one letter per line in a narrow column.
CSS = """
#lb-table th, #lb-table th * { word-break: normal !important; overflow-wrap: normal !important; }
#lb-table th { min-width: 7rem; }
#browse-card img { max-width: 100%; }
#browse-lineage th, #browse-lineage td:first-child { white-space: nowrap; }
#browse-lineage code { word-break: break-all; }
"""
DIFF_COLOURS = {"added": "#bbf7d0", "removed": "#fecaca"}


def build_blocks(space: Any) -> gr.Blocks:
    """Lay out the four tabs around ``space`` (a ``SpaceApp``) and wire their events."""
    with gr.Blocks(title="loradock: compare LoRA adapters") as demo:
        gr.Markdown("# loradock\nCompare a base model with its LoRA adapters.")
        status = gr.Markdown("Connecting…", elem_id="status")
        locked = space.policy.locked
        with gr.Accordion("Endpoint settings", open=False):
            gr.Markdown(
                "This Space is locked to its configured endpoint."
                if locked
                else "Another endpoint is called by this Space's server and gets only the "
                "key typed here; the Space's own key goes to its configured endpoint only.",
                elem_id="endpoint-note",
            )
            # Locked: no box to type in, and the handlers refuse any value sent anyway.
            endpoint = gr.Textbox(
                value="" if locked else space.endpoint,
                visible=not locked,
                label="loradock endpoint URL",
                elem_id="endpoint",
            )
            api_key = gr.Textbox(
                label="API key (blank: the Space's own key for its own endpoint, else none)",
                type="password",
                elem_id="api-key",
            )
        with gr.Row():
            base = gr.Dropdown(label="Base model", elem_id="base", scale=2)
            task = gr.Dropdown(label="Task", elem_id="task", scale=1)
            refresh = gr.Button("Refresh", elem_id="refresh", scale=0)
        with gr.Tabs():
            with gr.Tab("Compare", elem_id="tab-compare"):
                models = gr.CheckboxGroup(
                    label=f"Models (2 to {MAX_PANELS})", elem_id="compare-models"
                )
                example = gr.Dropdown(label="Example prompt", elem_id="compare-example")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="compare-prompt")
                expected = gr.Markdown(elem_id="compare-expected")
                max_tokens = gr.Slider(
                    8, 512, value=64, step=8, label="Max new tokens", elem_id="max-tokens"
                )
                run = gr.Button("Generate", variant="primary", elem_id="compare-run")
                cols, outs, stats, diffs = [], [], [], []
                with gr.Row():
                    for i in range(MAX_PANELS):
                        with gr.Column(visible=False, elem_id=f"compare-col-{i}") as col:
                            outs.append(
                                gr.Textbox(
                                    label=f"Model {i + 1}",
                                    lines=8,
                                    interactive=False,
                                    elem_id=f"compare-out-{i}",
                                )
                            )
                            stats.append(gr.Markdown(elem_id=f"compare-stats-{i}"))
                            diffs.append(
                                gr.HighlightedText(
                                    label="Against the base model's answer",
                                    color_map=DIFF_COLOURS,
                                    combine_adjacent=True,
                                    show_legend=True,
                                    visible=False,
                                    elem_id=f"compare-diff-{i}",
                                )
                            )
                        cols.append(col)
            with gr.Tab("Leaderboard", elem_id="tab-leaderboard"):
                with gr.Row():
                    sort_by = gr.Dropdown(label="Sort by", elem_id="lb-sort")
                    descending = gr.Checkbox(value=True, label="Descending")
                    metric = gr.Dropdown(label="Plot metric", elem_id="lb-metric")
                    lb_refresh = gr.Button("Refresh leaderboard", elem_id="lb-refresh")
                    csv = gr.DownloadButton("Download CSV", elem_id="lb-csv")
                caption = gr.Markdown(elem_id="lb-caption")
                gr.Markdown(
                    "`<metric> vs base`: the adapter minus the base model's own result; "
                    "green is better than the base, red worse (on a general-capability "
                    "metric, forgetting). `arena_95ci`: the rating's bootstrap 95% interval."
                )
                table = gr.Dataframe(interactive=False, elem_id="lb-table", wrap=False)
                plot = gr.BarPlot(
                    x="model", y="value", y_lim=[0, None], elem_id="lb-plot", height=300
                )
            with gr.Tab("Browse", elem_id="tab-browse"):
                adapter = gr.Dropdown(label="Adapter", elem_id="browse-adapter")
                with gr.Row():
                    with gr.Column(scale=3):
                        card = gr.Markdown(elem_id="browse-card")
                    with gr.Column(scale=2):
                        lineage = gr.Markdown(elem_id="browse-lineage")
                        revisions = gr.Dataframe(
                            label="Revisions and aliases",
                            interactive=False,
                            elem_id="browse-revisions",
                        )
                        with gr.Row():
                            rev_left = gr.Dropdown(label="Left revision", elem_id="browse-rev-a")
                            rev_right = gr.Dropdown(label="Right revision", elem_id="browse-rev-b")
                        rev_metrics = gr.Dataframe(
                            label="Metrics of the two revisions",
                            interactive=False,
                            elem_id="browse-rev-metrics",
                        )
                        card_state = gr.State(None)
            with gr.Tab("Arena", elem_id="tab-arena"):
                gr.Markdown(
                    "Two models answer the same prompt; their names stay hidden until you vote."
                )
                arena_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="arena-prompt")
                fight = gr.Button("Start battle", variant="primary", elem_id="arena-run")
                with gr.Row():
                    with gr.Column():
                        out_a = gr.Textbox(label="Model A", lines=6, elem_id="arena-out-a")
                        stats_a = gr.Markdown(elem_id="arena-stats-a")
                    with gr.Column():
                        out_b = gr.Textbox(label="Model B", lines=6, elem_id="arena-out-b")
                        stats_b = gr.Markdown(elem_id="arena-stats-b")
                with gr.Row():
                    vote_a = gr.Button("A is better", elem_id="vote-a")
                    vote_tie = gr.Button("Tie", elem_id="vote-tie")
                    vote_b = gr.Button("B is better", elem_id="vote-b")
                reveal = gr.Markdown(elem_id="arena-reveal")
                pending = gr.State(None)
                votes_cast = gr.State(0)  # per page session: the vote limit counts these

        conn = [endpoint, api_key]
        pickers = [base, task, models, adapter, example, status]
        board_in = [*conn, base, task, sort_by, descending, metric]
        board_out = [caption, table, plot, sort_by, metric, csv, status]
        browse_in = [*conn, adapter, base, task]
        browse_out = [card, lineage, revisions, rev_left, rev_right, rev_metrics, card_state]
        browse_out.append(status)

        def chain(event):
            return event.then(space.leaderboard, board_in, board_out).then(
                space.browse_quietly, browse_in, browse_out
            )

        chain(demo.load(space.refresh, [*conn, base, task], pickers))
        chain(refresh.click(space.refresh, [*conn, base, task], pickers))
        chain(base.input(space.refresh, [*conn, base, task], pickers))
        chain(task.input(space.refresh, [*conn, base, task], pickers))
        example.input(space.pick_example, example, [prompt, expected])
        prompt.input(space.expected, prompt, expected)
        run.click(
            space.compare,
            [*conn, base, models, prompt, max_tokens],
            [*cols, *outs, *stats, *diffs, expected, status],
        )
        for control in (lb_refresh.click, sort_by.input, descending.input, metric.input):
            control(space.leaderboard, board_in, board_out)
        adapter.input(space.browse, browse_in, browse_out)
        for pick in (rev_left.input, rev_right.input):
            pick(space.compare_revisions, [card_state, rev_left, rev_right], rev_metrics)
        fight.click(
            space.battle,
            [*conn, base, task, arena_prompt, max_tokens],
            [out_a, out_b, stats_a, stats_b, reveal, pending, status],
        )
        vote_out = [reveal, *board_out, votes_cast]
        for button, outcome in ((vote_a, "a"), (vote_b, "b"), (vote_tie, "tie")):

            async def on_vote(*args, outcome=outcome):
                return await space.vote(outcome, *args)

            button.click(on_vote, [pending, votes_cast, *board_in], vote_out)
    return demo
