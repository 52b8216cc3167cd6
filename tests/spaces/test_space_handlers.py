"""The page's handlers without a browser: right data in, readable messages out."""

from __future__ import annotations

import asyncio
import random

import pytest
from rendered import shown
from space_standin import BASE, canned_answer, free_port

from loradock.spaces.app import ALL_TASKS, SpaceApp

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a page

DOWN = f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def space(tmp_path, standin_url):
    return SpaceApp(endpoint=standin_url, arena_db=tmp_path / "arena.sqlite", rng=random.Random(1))


def drain(agen):
    async def go():
        return [item async for item in agen]

    return asyncio.run(go())


def test_refresh_fills_pickers_from_the_endpoint(space):
    base, task, models, adapter, example, status = asyncio.run(space.refresh("", "", None, "dates"))
    assert base["value"] == BASE and task["value"] == "dates"
    assert task["choices"] == [ALL_TASKS, "dates", "extraction"]
    values = [value for _, value in models["choices"]]
    assert values == [BASE, "acme/dates-r8", "acme/dates-r16", "acme/gone"]
    assert adapter["value"] == "acme/dates-r8"
    assert all("Date" in p for p in example["choices"])  # the task's own examples
    assert "Connected" in status


def test_refresh_with_the_endpoint_down_keeps_the_page_and_says_why(space):
    *updates, status = asyncio.run(space.refresh(DOWN, "", None, None))
    status = shown(status)
    assert status.startswith("⚠️") and "cannot reach" in status and DOWN in status
    assert all(u == {"__type__": "update"} for u in updates)


@pytest.mark.parametrize(
    ("models", "prompt", "phrase"),
    [
        ([BASE], "hi", "Pick 2 to 4 models"),
        ([BASE, "a/1", "a/2", "a/3", "a/4"], "hi", "(got 5)"),
        ([BASE, "acme/dates-r8"], "   ", "Type a prompt"),
    ],
)
def test_compare_refuses_bad_selections(space, models, prompt, phrase):
    ((*_, status),) = drain(space.compare("", "", models, prompt, 16))
    assert phrase in shown(status)


def test_compare_streams_until_every_panel_is_done(space):
    outputs = drain(space.compare("", "", [BASE, "acme/dates-r16"], "x y z", 16))
    assert len(outputs) > 2  # streamed: several snapshots
    *_, last = outputs
    assert last[4]["value"] == canned_answer(BASE, "x y z")
    assert last[5]["value"] == canned_answer("acme/dates-r16", "x y z")
    assert [last[i]["visible"] for i in range(4)] == [True, True, False, False]
    assert "4 tokens" in last[8] and last[-1] == "Done."


def test_battle_then_vote_moves_the_leaderboard(space):
    caption, table, *_ = asyncio.run(space.leaderboard("", "", BASE, "dates", None, True, None))
    assert table["arena_games"].sum() == 0 and "0 arena vote(s)" in caption
    # The base's own eval row is there, and forgetting reads against it.
    assert table.set_index("model").loc[BASE, "kind"] == "base"
    delta = table.set_index("model")["general_mc/acc vs base"]
    assert delta["acme/dates-r16"] == pytest.approx(0.35 - 0.45)
    *_, last = drain(space.battle("", "", BASE, "dates", "March 3, 24", 16))
    out_a, out_b, _, _, hidden, pending, status = last
    assert "hidden" in hidden and "Vote" in status
    assert {pending["a"], pending["b"]} <= {BASE, "acme/dates-r8", "acme/dates-r16"}  # not gone
    assert out_a == canned_answer(pending["a"], "March 3, 24")
    reveal, cleared, caption, table, *_, cast = asyncio.run(
        space.vote("b", pending, 0, "", "", BASE, "dates", "arena_elo", True, None)
    )
    assert f"B was `{pending['b']}`" in reveal and cleared is None and cast == 1
    assert "1 arena vote(s)" in caption
    assert table.iloc[0]["model"] == pending["b"] and table.iloc[0]["arena_elo"] == 1016.0
    assert space.arena.votes()[0].outcome == "b"


def test_vote_without_a_battle_is_refused(space):
    *_, status, cast = asyncio.run(
        space.vote("a", None, 0, "", "", BASE, "dates", None, True, None)
    )
    assert "Start a battle" in status and cast == 0
    assert space.arena.votes() == []


def test_leaderboard_with_the_endpoint_down_still_shows_arena_results(tmp_path):
    from loradock.spaces.arena import Vote

    space = SpaceApp(endpoint=DOWN, arena_db=tmp_path / "arena.sqlite")
    space.arena.record(Vote("acme/dates-r8", BASE, "a", base_model=BASE))
    _, table, _, _, _, status = asyncio.run(
        space.leaderboard("", "", BASE, "dates", None, True, None)
    )
    assert "cannot reach" in status and "arena results only" in status
    assert set(table["model"]) == {"acme/dates-r8", BASE}


def test_browse_of_a_deleted_adapter_says_so(space):
    *_, status = asyncio.run(space.browse("", "", "acme/deleted", BASE, ALL_TASKS))
    assert "acme/deleted" in shown(status) and "not found" in shown(status)


def test_a_background_card_reload_does_not_take_over_the_status_line(space):
    card, lineage, revisions, status = asyncio.run(
        space.browse_quietly("", "", "acme/deleted", BASE, ALL_TASKS)
    )
    assert "acme/deleted" in shown(card) and status == {"__type__": "update"}
