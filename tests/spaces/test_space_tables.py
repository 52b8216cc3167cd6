"""What the Leaderboard computes from registry rows and arena standings: columns, the
base row and the changes against it, their colours, sorting, plot data and CSV."""

from __future__ import annotations

import csv
import io
import math
import re

import pytest

from loradock.spaces.client import AdapterRow
from loradock.spaces.ratings import Standing
from loradock.spaces.tables import (
    BETTER,
    NOT_COMPARABLE,
    WORSE,
    default_metric,
    delta_style,
    leaderboard_csv,
    leaderboard_frame,
    metric_columns,
    plot_frame,
    sort_frame,
    styled,
    version_caption,
)

ROWS = [
    AdapterRow("o/d8", tasks=("dates",), metrics={"dates/exact_match": 0.6, "general_mc/acc": 0.4}),
    AdapterRow(
        "o/d16", tasks=("dates",), metrics={"dates/exact_match": 0.7, "general_mc/acc": 0.3}
    ),
    AdapterRow("o/x8", tasks=("extraction",), metrics={"extraction/exact_match": 0.5}),
]
BASE_ROW = AdapterRow(
    "base", kind="base", metrics={"general_mc/acc": 0.45, "dates/exact_match": 0.05}
)
STANDINGS = [
    Standing("o/d16", 1040.0, 990.0, 1090.0, games=1, wins=1, losses=0, ties=0),
    Standing("base", 960.0, 910.0, 1010.0, games=1, wins=0, losses=1, ties=0),
]


def test_task_metric_comes_first_then_general_capability():
    first, rest = metric_columns(ROWS, "dates")
    assert first == ["dates/exact_match"]
    assert rest == ["general_mc/acc", "extraction/exact_match"]
    first, rest = metric_columns(ROWS, None)  # all tasks: every trained task's metric first
    assert first == ["dates/exact_match", "extraction/exact_match"] and rest == ["general_mc/acc"]


def test_leaderboard_joins_metrics_and_arena_ratings_with_intervals():
    frame = leaderboard_frame(ROWS, STANDINGS, task="dates", base_model="base")
    assert list(frame.columns)[4:6] == ["dates/exact_match", "general_mc/acc"]
    assert list(frame.columns)[-4:] == [
        "arena_rating",
        "arena_95ci",
        "arena_win_rate",
        "arena_games",
    ]
    by_model = frame.set_index("model")
    assert by_model.loc["o/d16", "arena_rating"] == 1040.0
    assert by_model.loc["o/d16", "arena_95ci"] == "990 to 1090"
    assert by_model.loc["o/d16", "arena_win_rate"] == 1.0
    assert by_model.loc["o/d8", "arena_games"] == 0 and by_model.loc["o/d8", "arena_95ci"] == ""
    assert by_model.loc["base", "kind"] == "base"  # played in the arena, no index row
    assert math.isnan(by_model.loc["base", "dates/exact_match"])


def test_the_base_row_carries_its_metrics_and_every_metric_its_change():
    frame = leaderboard_frame([BASE_ROW, *ROWS], STANDINGS, task="dates", base_model="base")
    assert list(frame.columns)[4:8] == [
        "dates/exact_match",
        "dates/exact_match vs base",
        "general_mc/acc",
        "general_mc/acc vs base",
    ]
    by_model = frame.set_index("model")
    assert by_model.loc["base", "general_mc/acc"] == 0.45  # the base row has metrics
    assert by_model.loc["base", "general_mc/acc vs base"] == 0.0
    assert by_model.loc["o/d16", "general_mc/acc vs base"] == pytest.approx(-0.15)
    assert by_model.loc["o/d16", "dates/exact_match vs base"] == pytest.approx(0.65)
    assert by_model.loc["base", "arena_rating"] == 960.0  # its index row joined its arena record
    assert len(frame) == 4  # the base appears once
    no_base = leaderboard_frame(ROWS, STANDINGS, task="dates", base_model="base")
    assert "general_mc/acc vs base" not in no_base.columns  # no base evals: no change column


@pytest.mark.parametrize(
    ("column", "value", "style"),
    [
        ("general_mc/acc vs base", -0.15, WORSE),  # forgetting: red
        ("dates/exact_match vs base", 0.65, BETTER),
        ("general_mc/acc vs base", 0.0, ""),
        ("general_mc/acc vs base", None, ""),
        ("general_mc/acc vs base", float("nan"), ""),
        ("dates/perplexity vs base", 1.5, WORSE),  # lower is better: a rise is worse
        ("dates/perplexity vs base", -1.5, BETTER),
        ("general_mc/acc", -0.15, ""),  # only the change columns are coloured
    ],
)
def test_changes_against_the_base_are_coloured(column, value, style):
    assert delta_style(column, value) == style


def test_the_styled_table_colours_the_cells_in_html():
    frame = leaderboard_frame([BASE_ROW, *ROWS], [], task="dates", base_model="base")
    html = styled(frame).to_html()
    cells = {  # colour -> the cells (#T_..._rowR_colC selectors) drawn in it
        colour: len(re.findall(r"#T_\w+", selectors))
        for selectors, colour in re.findall(r"([^{}]+)\{\s*color: (#\w+)", html)
    }
    # d8 and d16 lost general_mc/acc against the base (red); both beat it on dates (green).
    assert cells == {"#b91c1c": 2, "#15803d": 2}


@pytest.mark.parametrize(
    ("column", "descending", "order"),
    [
        ("dates/exact_match", True, ["o/d16", "o/d8", "o/x8", "base"]),
        ("dates/exact_match", False, ["o/d8", "o/d16", "o/x8", "base"]),
        ("general_mc/acc", True, ["o/d8", "o/d16", "o/x8", "base"]),
        ("arena_rating", True, ["o/d16", "base", "o/d8", "o/x8"]),
        ("model", False, ["base", "o/d16", "o/d8", "o/x8"]),
        ("no-such-column", True, ["o/d8", "o/d16", "o/x8", "base"]),  # unknown: order kept
    ],
)
def test_leaderboard_sorts_with_missing_values_last(column, descending, order):
    frame = sort_frame(leaderboard_frame(ROWS, STANDINGS, task="dates"), column, descending)
    assert list(frame["model"]) == order


def test_csv_has_the_columns_and_values_shown():
    frame = leaderboard_frame([BASE_ROW, *ROWS], STANDINGS, task="dates", base_model="base")
    rows = list(csv.DictReader(io.StringIO(leaderboard_csv(frame))))
    assert list(rows[0]) == list(frame.columns)
    by_model = {r["model"]: r for r in rows}
    assert by_model["o/d16"]["general_mc/acc vs base"] == "-0.15"
    assert by_model["o/d16"]["arena_95ci"] == "990 to 1090"
    assert by_model["base"]["general_mc/acc"] == "0.45"
    assert by_model["o/x8"]["dates/exact_match"] == ""  # unknown: an empty cell


def test_plot_keeps_models_with_a_value():
    frame = leaderboard_frame(ROWS, STANDINGS, task="dates")
    data = plot_frame(frame, "dates/exact_match")
    assert list(data["model"]) == ["o/d8", "o/d16"] and list(data["value"]) == [0.6, 0.7]
    assert plot_frame(frame, "missing").empty
    assert default_metric(frame, "dates") == "dates/exact_match"
    assert default_metric(leaderboard_frame([], STANDINGS), None) == "arena_rating"


V1 = {"version": "1.0", "config_hash": "ab42f00b99", "num_fewshot": 0}
V2 = {"version": "2.0", "config_hash": "ab42f00b99", "num_fewshot": 0}
TWO_SHOT = {"version": "1.0", "config_hash": "ab42f00b99", "num_fewshot": 2}
OTHER_CONFIG = {"version": "1.0", "config_hash": "2a54b7ec00", "num_fewshot": 0}
ACC = "general_mc/acc"


def _versioned(base_on, adapter_on):
    """The base and o/d16 with ``general_mc/acc`` measured on what each names (None: unsaid)."""

    def row(repo_id, kind, value, on):
        extra = {"metric_versions": {ACC: on}} if on is not None else {}
        return AdapterRow(repo_id, kind=kind, metrics={ACC: value}, extra=extra)

    return [row("base", "base", 0.45, base_on), row("o/d16", "adapter", 0.3, adapter_on)]


@pytest.mark.parametrize(
    ("base_on", "adapter_on", "change", "shown"),
    [
        (V1, V1, pytest.approx(-0.15), "`general_mc` v1.0, 0-shot, config ab42f00b"),
        (V1, V2, "v2.0≠v1.0", "v2.0, 0-shot, config ab42f00b (`o/d16`)"),
        (V1, TWO_SHOT, "2-shot≠0-shot", "v1.0, 2-shot, config ab42f00b (`o/d16`)"),
        (V1, OTHER_CONFIG, "config 2a54b7ec≠config ab42f00b", "config 2a54b7ec (`o/d16`)"),
        (V1, {"version": "2.0"}, "v2.0≠v1.0", "v2.0, ?-shot (`o/d16`)"),
        (V1, None, pytest.approx(-0.15), "not recorded (`o/d16`)"),  # unsaid: no proof of ≠
        (None, V2, pytest.approx(-0.15), "not recorded (`base`)"),
        (None, None, pytest.approx(-0.15), ""),  # a server that sends no versions
        (V1, {"version": None, "num_fewshot": "0"}, pytest.approx(-0.15), "not recorded (`o/d16`)"),
    ],
    ids=[
        "same",
        "other-version",
        "other-n-shot",
        "other-config",
        "partly-said",
        "adapter-unsaid",
        "base-unsaid",
        "none-said",
        "malformed",
    ],
)
def test_a_change_is_computed_only_between_values_measured_alike(
    base_on, adapter_on, change, shown
):
    rows = _versioned(base_on, adapter_on)
    frame = leaderboard_frame(rows, [], task="dates", base_model="base")
    by_model = frame.set_index("model")
    cell = by_model.loc["o/d16", f"{ACC} vs base"]
    assert cell == change
    assert by_model.loc["o/d16", ACC] == 0.3  # the value itself is always shown
    caption = version_caption(rows, frame).replace("\\", "")  # Markdown escapes dropped
    assert shown in caption if shown else caption == ""
    refused = isinstance(change, str)
    assert ("differs between rows (not comparable)" in caption) is refused
    assert ("no change is computed" in caption) is refused
    assert (delta_style(f"{ACC} vs base", cell) == NOT_COMPARABLE) is refused


def test_a_change_measured_differently_sorts_with_the_unknown_ones():
    base, d16 = _versioned(V1, V2)
    d8 = AdapterRow("o/d8", metrics={ACC: 0.5}, extra={"metric_versions": {ACC: V1}})
    frame = leaderboard_frame([base, d16, d8], [], base_model="base")
    for descending in (True, False):
        order = sort_frame(frame, f"{ACC} vs base", descending)["model"].tolist()
        assert order[-1] == "o/d16"
    assert "v2.0≠v1.0" in leaderboard_csv(frame)  # the CSV says so too
    assert plot_frame(frame, f"{ACC} vs base")["model"].tolist() == ["base", "o/d8"]


@pytest.mark.parametrize(
    ("f1_on", "caption"),
    [
        (V1, "Measured on: `dates` v1.0, 0-shot, config ab42f00b"),  # one entry per task
        (V2, "`dates/exact_match` v1.0, 0-shot, config ab42f00b · `dates/f1` v2.0, 0-shot"),
        (None, "Measured on: `dates` v1.0, 0-shot, config ab42f00b"),  # unsaid: left out
    ],
    ids=["task-alike", "metrics-differ", "metric-unsaid"],
)
def test_the_caption_names_a_task_once_unless_its_metrics_differ(f1_on, caption):
    on = {"dates/exact_match": V1, "dates/f1": f1_on}
    said = {k: v for k, v in on.items() if v is not None}
    rows = [
        AdapterRow(m, metrics={k: 0.5 for k in on}, extra={"metric_versions": said})
        for m in ("o/a", "o/b")
    ]
    text = version_caption(rows, leaderboard_frame(rows, [])).replace("\\", "")
    assert caption in text and "not comparable" not in text and "not recorded" not in text
