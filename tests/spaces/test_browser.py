"""The Space in a real browser: headless Debian Chromium driven by Playwright on 127.0.0.1.

The Space talks to a real ``loradock serve`` (PEFT engine, tiny random model, local
registry). A reviewer's path: pick models, submit a prompt, see each streamed output; hit
an adapter that is gone and read the message; read the base row and the changes against
it; vote in the arena (one vote per battle) and see Bradley-Terry ratings with intervals;
read a card with its loss plot (a file of the repo, through the Space with its own key).
Screenshots land in artifacts/screenshots/ (gitignored).
"""

from __future__ import annotations

import re

import pytest
from browser import SCREENSHOTS, browser_page, launched, settle, sync_api, table
from space_standin import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def space_url(tmp_path_factory, real_endpoint):
    from loradock.spaces.app import build_app

    db = tmp_path_factory.mktemp("arena") / "arena.sqlite"
    demo = build_app(
        endpoint=real_endpoint.url,
        api_key=real_endpoint.key,
        arena_db=db,
        arena_hub=db.parent,  # its own vote repo: a Space restores every vote of its repo
        lock_endpoint=False,
    )
    with launched(demo) as url:
        yield url


@pytest.fixture(scope="module")
def page(space_url):
    with browser_page(space_url) as page:
        yield page


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _textarea(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea")


def _set_models(page, names: list[str]) -> None:
    group = page.locator("#compare-models")
    for box in group.locator("input[type=checkbox]").all():
        if box.is_checked():
            box.uncheck()
    for name in names:
        group.get_by_text(name, exact=True).click()


def _set_max_tokens(page, n: int) -> None:
    box = page.locator("#max-tokens input[type=number]")
    box.fill(str(n))
    box.press("Enter")


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_compare_streams_each_selected_model_side_by_side(page):
    _open_tab(page, "Compare")
    _set_max_tokens(page, 16)
    models = ["tiny/base", "acme/dates-a", "acme/dates-b"]
    _set_models(page, ["tiny/base (base model)", "acme/dates-a", "acme/dates-b"])
    _textarea(page, "compare-prompt").fill("Normalise the date 3rd of March 2024")
    page.locator("#compare-run").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Done.", timeout=120_000)
    for i, model in enumerate(models):
        sync_api.expect(page.locator(f"#compare-col-{i}")).to_contain_text(model)
        assert _textarea(page, f"compare-out-{i}").input_value() != ""
        stats = page.locator(f"#compare-stats-{i}").inner_text()
        assert re.search(r"\b16 tokens · prompt \d+ · first token [\d.]+s", stats), stats
    assert not page.locator("#compare-col-3").is_visible()  # 3 models: the 4th panel hidden
    page.screenshot(path=str(SCREENSHOTS / "compare.png"), full_page=True)


def test_a_gone_adapter_reads_as_a_message_not_a_traceback(page, real_endpoint):
    _open_tab(page, "Compare")
    _set_models(page, ["tiny/base (base model)", real_endpoint.gone])
    _textarea(page, "compare-prompt").fill("Any date at all")
    page.locator("#compare-run").click()
    status = page.locator("#status")
    sync_api.expect(status).to_contain_text(real_endpoint.gone, timeout=60_000)
    sync_api.expect(status).to_contain_text("HTTP 404")
    sync_api.expect(page.locator("#compare-stats-1")).to_contain_text("refresh the list")
    sync_api.expect(page.locator("#compare-stats-0")).to_contain_text("16 tokens")  # still ran
    assert "Traceback" not in page.content()
    page.screenshot(path=str(SCREENSHOTS / "compare-error.png"), full_page=True)


def _leaderboard(page, votes: int) -> dict[str, dict[str, str]]:
    """The leaderboard of task dates once it shows ``votes`` votes (other tasks' rows gone)."""
    _open_tab(page, "Leaderboard")
    page.locator("#lb-refresh").click()
    sync_api.expect(page.locator("#lb-caption")).to_contain_text(f"{votes} arena vote(s)")
    sync_api.expect(page.locator("#lb-table")).to_contain_text("acme/dates-a")
    sync_api.expect(page.locator("#lb-table")).not_to_contain_text("acme/extract-a")
    settle(page)
    return {row["model"]: row for row in table(page, "lb-table")}


def test_arena_votes_move_bradley_terry_ratings_with_intervals(page):
    _pick(page, "task", "dates")  # the arena draws from this task's adapters and the base
    sync_api.expect(page.locator("#status")).to_contain_text("task dates")
    before = _leaderboard(page, votes=0)
    assert "acme/extract-a" not in before and "acme/gone" not in before  # filtered by task
    # The base row carries the base's own eval result; each adapter's change against it.
    assert before["tiny/base"]["kind"] == "base"
    assert before["tiny/base"]["general_mc/acc"] == "0.55"
    assert before["acme/dates-b"]["general_mc/acc"] == "0.45"
    assert before["acme/dates-b"]["general_mc/acc vs base"] == "-0.1"
    assert all(row["arena_rating"] == "" for row in before.values())  # no votes yet

    _open_tab(page, "Arena")
    _textarea(page, "arena-prompt").fill("March 3, 24")
    battles = []
    for round_ in range(3):
        page.locator("#arena-run").click()
        sync_api.expect(page.locator("#status")).to_contain_text(
            "Vote: which answer", timeout=120_000
        )
        assert page.locator("#arena-reveal").inner_text().startswith("Names are hidden")
        assert "acme/" not in page.locator("#arena-stats-a").inner_text()
        if round_ == 0:
            page.screenshot(path=str(SCREENSHOTS / "arena-blind.png"), full_page=True)
        page.locator("#vote-a").click()
        sync_api.expect(page.locator("#arena-reveal")).to_contain_text("A was")
        reveal = page.locator("#arena-reveal").inner_text()
        battles.append(re.search(r"A was ([\w/.-]+), B was ([\w/.-]+?)\.?$", reveal).groups())
    sync_api.expect(page.locator("#status")).to_contain_text("Vote recorded")
    # Voting again on the same battle is refused: one vote per battle.
    page.locator("#vote-b").click()
    sync_api.expect(page.locator("#status")).to_contain_text("already has its vote")
    page.screenshot(path=str(SCREENSHOTS / "arena-voted.png"), full_page=True)

    after = _leaderboard(page, votes=3)
    # Bradley-Terry over the three revealed battles (A won each), whatever their order.
    from loradock.spaces.ratings import Game, standings

    for standing in standings([Game(a, b, "a") for a, b in battles]):
        row = after[standing.model]
        assert row["arena_rating"] == f"{round(standing.rating, 1):g}", (standing, row)
        assert row["arena_95ci"] == standing.interval()
        assert row["arena_games"] == str(standing.games)
    page.locator("#lb-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "leaderboard.png"), full_page=True)


def test_browse_shows_card_loss_plot_lineage_and_aliases(page, real_endpoint):
    _open_tab(page, "Browse")
    _pick(page, "browse-adapter", "acme/dates-a")
    sync_api.expect(page.locator("#browse-card")).to_contain_text("LoRA adapter for the")
    # The loss plot is a file of the repo, read by the Space's server through the registry
    # route with the Space's own key, and handed to the page inline: the page never
    # learns the key nor asks the endpoint itself.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#browse-card img')]"
        ".some(img => img.complete && img.naturalWidth > 0 && img.src.startsWith('data:image/png'))"
    )
    assert real_endpoint.key not in page.content()
    lineage = page.locator("#browse-lineage")
    sync_api.expect(lineage).to_contain_text("tiny/base")
    sync_api.expect(lineage).to_contain_text("learning_rate")
    sha = real_endpoint.shas["acme/dates-a"]
    sync_api.expect(page.locator("#browse-revisions")).to_contain_text(sha[:12])
    sync_api.expect(page.locator("#browse-revisions")).to_contain_text("prod")
    page.screenshot(path=str(SCREENSHOTS / "browse.png"), full_page=True)


def test_endpoint_down_reads_as_a_message(page, real_endpoint):
    page.get_by_text("Endpoint settings").click()
    box = _textarea(page, "endpoint").or_(page.locator("#endpoint input"))
    # The accordion mounts its boxes when opened and then sets their values: typing before
    # the configured URL shows up would be overwritten by it.
    sync_api.expect(box).to_have_value(real_endpoint.url)
    down = f"http://127.0.0.1:{free_port()}"
    box.fill(down)
    sync_api.expect(box).to_have_value(down)
    page.locator("#refresh").click()
    sync_api.expect(page.locator("#status")).to_contain_text("cannot reach")
    assert "Traceback" not in page.content()
    page.screenshot(path=str(SCREENSHOTS / "endpoint-down.png"), full_page=True)
