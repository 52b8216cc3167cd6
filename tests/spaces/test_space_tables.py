"""What the Leaderboard and Browse tabs compute from registry rows and arena standings."""

from __future__ import annotations

import math

import pytest
from rendered import rendered_html

from loradock.spaces.arena import Standing
from loradock.spaces.client import AdapterCardView, AdapterRow
from loradock.spaces.tables import (
    default_metric,
    leaderboard_frame,
    lineage_markdown,
    load_examples,
    metric_columns,
    plot_frame,
    revisions_frame,
    sort_frame,
)

ROWS = [
    AdapterRow("o/d8", tasks=("dates",), metrics={"dates/exact_match": 0.6, "general_mc/acc": 0.4}),
    AdapterRow(
        "o/d16", tasks=("dates",), metrics={"dates/exact_match": 0.7, "general_mc/acc": 0.3}
    ),
    AdapterRow("o/x8", tasks=("extraction",), metrics={"extraction/exact_match": 0.5}),
]
STANDINGS = [
    Standing("o/d16", elo=1016.0, games=1, wins=1, losses=0, ties=0),
    Standing("base", elo=984.0, games=1, wins=0, losses=1, ties=0),
]


def test_task_metric_comes_first_then_general_capability():
    first, rest = metric_columns(ROWS, "dates")
    assert first == ["dates/exact_match"]
    assert rest == ["general_mc/acc", "extraction/exact_match"]
    first, rest = metric_columns(ROWS, None)  # all tasks: every trained task's metric first
    assert first == ["dates/exact_match", "extraction/exact_match"] and rest == ["general_mc/acc"]


def test_leaderboard_joins_metrics_and_arena_results():
    frame = leaderboard_frame(ROWS, STANDINGS, task="dates", base_model="base")
    assert list(frame.columns)[4:6] == ["dates/exact_match", "general_mc/acc"]
    assert list(frame.columns)[-3:] == ["arena_elo", "arena_win_rate", "arena_games"]
    by_model = frame.set_index("model")
    assert by_model.loc["o/d16", "arena_elo"] == 1016.0
    assert by_model.loc["o/d16", "arena_win_rate"] == 1.0
    assert by_model.loc["o/d8", "arena_games"] == 0
    assert by_model.loc["base", "kind"] == "base"  # played in the arena, no index row
    assert math.isnan(by_model.loc["base", "dates/exact_match"])


@pytest.mark.parametrize(
    ("column", "descending", "order"),
    [
        ("dates/exact_match", True, ["o/d16", "o/d8", "o/x8", "base"]),
        ("dates/exact_match", False, ["o/d8", "o/d16", "o/x8", "base"]),
        ("general_mc/acc", True, ["o/d8", "o/d16", "o/x8", "base"]),
        ("arena_elo", True, ["o/d16", "base", "o/d8", "o/x8"]),
        ("model", False, ["base", "o/d16", "o/d8", "o/x8"]),
        ("no-such-column", True, ["o/d8", "o/d16", "o/x8", "base"]),  # unknown: order kept
    ],
)
def test_leaderboard_sorts_with_missing_values_last(column, descending, order):
    frame = sort_frame(leaderboard_frame(ROWS, STANDINGS, task="dates"), column, descending)
    assert list(frame["model"]) == order


def test_plot_keeps_models_with_a_value():
    frame = leaderboard_frame(ROWS, STANDINGS, task="dates")
    data = plot_frame(frame, "dates/exact_match")
    assert list(data["model"]) == ["o/d8", "o/d16"] and list(data["value"]) == [0.6, 0.7]
    assert plot_frame(frame, "missing").empty
    assert default_metric(frame, "dates") == "dates/exact_match"
    assert default_metric(leaderboard_frame([], STANDINGS), None) == "arena_elo"


def test_lineage_and_revisions_from_the_card():
    row = AdapterRow("o/d8", base_model="b", sha="s1", tasks=("dates",), aliases={"prod": "s1"})
    card = AdapterCardView(
        "o/d8",
        "# card",
        lineage={
            "base_model": "tiny/base",
            "base_revision": "r" * 40,
            "datasets": ["loradock/dates"],
            "training": {"r": 8, "learning_rate": 0.0002},
            "revisions": ["s1", "s0"],
            "aliases": {"prod": "s1", "staging": "s0"},
        },
        sha="s1",
    )
    html = rendered_html(lineage_markdown(row, card))
    for phrase in (
        "<code>tiny/base</code> @ <code>rrrr",
        "<code>loradock/dates</code>",
        "<td>learning_rate</td>\n<td><code>0.0002</code></td>",
    ):
        assert phrase in html
    revs = revisions_frame(row, card)
    assert revs.to_dict("records") == [
        {"revision": "s1", "aliases": "prod"},
        {"revision": "s0", "aliases": "staging"},
    ]


def test_lineage_falls_back_to_the_index_row():
    row = AdapterRow(
        "o/n", base_model="tiny/base", sha="s9", revisions=("s9",), aliases={"prod": "s9"}
    )
    card = AdapterCardView("o/n", "")
    assert "revision not pinned" in lineage_markdown(row, card)
    assert revisions_frame(row, card).to_dict("records") == [{"revision": "s9", "aliases": "prod"}]


def test_shipped_examples_cover_the_training_tasks():
    examples = load_examples()
    assert {"dates", "extraction"} <= set(examples)
    assert all(prompts and all(p.strip() for p in prompts) for prompts in examples.values())


def test_general_capability_delta_against_the_base_shows_forgetting():
    base_row = AdapterRow(
        "base", kind="base", metrics={"general_mc/acc": 0.45, "dates/exact_match": 0.05}
    )
    frame = leaderboard_frame([base_row, *ROWS], STANDINGS, task="dates", base_model="base")
    cols = list(frame.columns)
    assert cols[4:7] == ["dates/exact_match", "general_mc/acc", "general_mc/acc vs base"]
    by_model = frame.set_index("model")
    assert by_model.loc["o/d16", "general_mc/acc vs base"] == pytest.approx(-0.15)
    assert by_model.loc["o/d8", "general_mc/acc vs base"] == pytest.approx(-0.05)
    assert by_model.loc["base", "kind"] == "base"
    assert by_model.loc["base", "arena_elo"] == 984.0  # its index row joined its arena record
    assert len(frame) == 4  # the base appears once
    no_base = leaderboard_frame(ROWS, STANDINGS, task="dates", base_model="base")
    assert "general_mc/acc vs base" not in no_base.columns  # no base evals: no delta column
