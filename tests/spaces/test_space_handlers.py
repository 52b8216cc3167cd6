"""The page's handlers without a browser: right data in, readable messages out."""

from __future__ import annotations

import asyncio
import base64
import random

import pytest
from rendered import shown
from space_standin import BASE, OLD_SHA, SHA, canned_answer, free_port, png_bytes

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
    ((*_, status),) = drain(space.compare("", "", BASE, models, prompt, 16))
    assert phrase in shown(status)


def test_compare_streams_then_marks_departures_from_the_base(space, standin):
    outputs = drain(space.compare("", "", BASE, [BASE, "acme/dates-r16"], "x y z", 16))
    assert len(outputs) > 2  # streamed: several snapshots
    *_, last = outputs
    assert last[4]["value"] == canned_answer(BASE, "x y z")
    assert last[5]["value"] == canned_answer("acme/dates-r16", "x y z")
    assert [last[i]["visible"] for i in range(4)] == [True, True, False, False]
    assert "4 tokens" in last[8] and last[-1] == "Done."
    diffs = last[12:16]
    assert [d["visible"] for d in diffs] == [False, True, False, False]  # not the base itself
    marked = [("[", None), ("base", "removed"), ("dates-r16", "added"), ("] z y x", None)]
    assert diffs[1]["value"] == marked
    assert diffs[1]["label"] == f"Against {BASE}'s answer: 53% differs"  # 9 of 17 characters
    assert not any(d["visible"] for d in outputs[0][12:16])  # only once every answer is done
    greedy = standin[0].state.chats[-2:]
    assert all(c["temperature"] == 0.0 and "seed" not in c for c in greedy)


def test_an_example_prompt_shows_its_expected_answer(space):
    example = space.examples["dates"][0]
    prompt, expected = space.pick_example(example.prompt)
    assert prompt == example.prompt and example.expected in shown(expected)
    assert space.expected("my own prompt") == ""
    *_, last = drain(space.compare("", "", BASE, [BASE, "acme/dates-r8"], example.prompt, 8))
    assert example.expected in shown(last[-2])


def test_battle_samples_with_a_seed_then_one_vote_moves_the_leaderboard(space, standin):
    caption, table, *_ = asyncio.run(space.leaderboard("", "", BASE, "dates", None, True, None))
    table = table.data
    assert table["arena_games"].sum() == 0 and "0 arena vote(s)" in caption
    # The base's own eval row is there, and forgetting reads against it.
    assert table.set_index("model").loc[BASE, "general_mc/acc"] == 0.45
    delta = table.set_index("model")["general_mc/acc vs base"]
    assert delta["acme/dates-r16"] == pytest.approx(0.35 - 0.45)
    *_, last = drain(space.battle("", "", BASE, "dates", "March 3, 24", 16))
    out_a, out_b, _, _, hidden, battle, status = last
    assert "hidden" in hidden and "Vote" in status
    assert {battle.model_a, battle.model_b} <= {BASE, "acme/dates-r8", "acme/dates-r16"}
    # Sampled with the battle's seed, so not Compare's greedy answer.
    assert out_a == canned_answer(battle.model_a, "March 3, 24", battle.seed)
    assert out_a != canned_answer(battle.model_a, "March 3, 24")
    sent = standin[0].state.chats[-2:]
    assert [(c["temperature"] > 0, c["seed"]) for c in sent] == [(True, battle.seed)] * 2

    def vote(outcome, cast):
        return asyncio.run(
            space.vote(outcome, battle, cast, "", "", BASE, "dates", "arena_rating", True, None)
        )

    reveal, caption, table, *_, status, cast = vote("b", 0)
    assert f"B was `{battle.model_b}`" in reveal and cast == 1
    assert "1 arena vote(s)" in caption
    top = table.data.iloc[0]
    assert top["model"] == battle.model_b and top["arena_rating"] > 1000
    assert " to " in top["arena_95ci"]
    # The same battle again: refused by the store, not counted.
    *_, status, cast = vote("a", cast)
    assert "already has its vote" in shown(status) and cast == 1
    assert [v.outcome for v in space.arena.votes()] == ["b"]
    assert space.arena.votes()[0].battle_id == battle.id


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
    _, table, *_, status = asyncio.run(space.leaderboard("", "", BASE, "dates", None, True, None))
    assert "cannot reach" in status and "arena results only" in status
    assert set(table.data["model"]) == {"acme/dates-r8", BASE}


def test_browse_of_a_deleted_adapter_says_so(space):
    *_, status = asyncio.run(space.browse("", "", "acme/deleted", BASE, ALL_TASKS))
    assert "acme/deleted" in shown(status) and "not found" in shown(status)


def test_a_background_card_reload_does_not_take_over_the_status_line(space):
    card, *_, status = asyncio.run(space.browse_quietly("", "", "acme/deleted", BASE, ALL_TASKS))
    assert "acme/deleted" in shown(card) and status == {"__type__": "update"}


def test_browse_inlines_the_loss_plot_and_compares_two_revisions(space):
    card, lineage, revisions, left, right, metrics, loaded, _ = asyncio.run(
        space.browse("", "", "acme/dates-r16", BASE, "dates")
    )
    png = base64.b64encode(png_bytes()).decode()
    assert f"![training loss](data:image/png;base64,{png})" in card
    assert "/home/alice" not in lineage and "(local path)" in lineage
    assert (left["value"], right["value"]) == (OLD_SHA, SHA)  # older on the left
    rows = metrics.set_index("metric")["change"].to_dict()
    assert rows == {"dates/exact_match": pytest.approx(0.1), "general_mc/acc": pytest.approx(0.1)}
    same = space.compare_revisions(loaded, SHA, SHA)
    assert list(same.columns) == ["metric", f"{SHA[:12]} (left)", f"{SHA[:12]} (right)", "change"]


def test_a_card_image_the_endpoint_cannot_serve_reads_as_a_sentence(space, monkeypatch):
    from loradock.spaces import browse_tab

    monkeypatch.setattr(browse_tab, "IMAGE_TYPES", ())  # as if the file were not an image
    card, *_ = asyncio.run(space.browse("", "", "acme/dates-r8", BASE, "dates"))
    assert "training loss: not an image (image/png)" in shown(card)
    assert "data:" not in card
