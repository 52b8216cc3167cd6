"""A reviewer's walk through the four tabs in Chromium, against the stand-in endpoint
(it serves the card's loss plot by revision, which the Space asks the server for).

Each test asserts what the reviewer must see and saves a screenshot of its tab to
artifacts/screenshots/tab-*.png (docs/space.md shows them).
"""

from __future__ import annotations

import csv
import io
import time

import pytest
from browser import SCREENSHOTS, browser_page, launched, open_page, settle, sync_api, table
from space_standin import BASE, OLD_SHA, SHA

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["hubserver.fixtures"]
RED = "rgb(185, 28, 28)"  # tables.WORSE: forgetting
SCROLL_RIGHT_JS = """root => root.querySelectorAll('*').forEach(el => {
  if (el.scrollWidth > el.clientWidth) el.scrollLeft = el.scrollWidth;
})"""


@pytest.fixture(scope="module")
def space_url(tmp_path_factory, standin_url):
    from loradock.spaces.app import build_app

    db = tmp_path_factory.mktemp("arena") / "arena.sqlite"
    # Its own vote repo: a Space restores every vote of the repo it is given.
    demo = build_app(endpoint=standin_url, arena_db=db, arena_hub=db.parent, lock_endpoint=True)
    with launched(demo) as url:
        yield url


@pytest.fixture(scope="module")
def page(space_url):
    with browser_page(space_url) as page:
        page.get_by_role("tab", name="Compare").click()
        page.locator("#task input").click()
        page.get_by_role("option", name="dates", exact=True).click()
        sync_api.expect(page.locator("#status")).to_contain_text("task dates")
        yield page


def test_compare_marks_departures_and_shows_the_expected_answer(page):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-example input").click()
    page.get_by_role("option").filter(has_text="Oct 1 2003").click()
    sync_api.expect(page.locator("#compare-expected")).to_contain_text("2003-10-01")
    group = page.locator("#compare-models")
    for name in ("tiny/base (base model)", "acme/dates-r8"):
        group.get_by_text(name, exact=True).click()
    page.locator("#compare-run").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Done.", timeout=60_000)
    diff = page.locator("#compare-diff-1")
    sync_api.expect(diff).to_be_visible()
    sync_api.expect(diff).to_contain_text("dates-r8")
    assert not page.locator("#compare-diff-0").is_visible()  # the base is the reference
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "tab-compare.png"), full_page=True)


def test_leaderboard_has_the_base_row_coloured_changes_and_a_csv(page, tmp_path):
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#lb-refresh").click()
    sync_api.expect(page.locator("#lb-table")).to_contain_text("acme/dates-r16")
    rows = {r["model"]: r for r in table(page, "lb-table")}
    assert rows[BASE]["kind"] == "base" and rows[BASE]["general_mc/acc"] == "0.45"
    assert rows["acme/dates-r16"]["general_mc/acc vs base"] == "-0.1"
    cell = page.locator("#lb-table [role=gridcell] span").filter(has_text="-0.1").first
    assert cell.evaluate("span => getComputedStyle(span).color") == RED
    # Headers wrap between words, never one letter per line.
    heights = page.locator("#lb-table thead th").evaluate_all(
        "ths => ths.map(th => th.getBoundingClientRect().height)"
    )
    assert heights and max(heights) < 90, heights
    with page.expect_download() as download:
        page.locator("#lb-csv").click()
    saved = tmp_path / "leaderboard.csv"
    download.value.save_as(saved)
    by_model = {r["model"]: r for r in csv.DictReader(io.StringIO(saved.read_text()))}
    assert by_model[BASE]["general_mc/acc"] == "0.45"
    assert by_model["acme/dates-r16"]["general_mc/acc vs base"] == "-0.1"
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "tab-leaderboard.png"), full_page=True)


def test_browse_shows_the_loss_plot_readable_lineage_and_two_revisions(page):
    page.get_by_role("tab", name="Browse").click()
    page.locator("#browse-adapter input").click()
    page.get_by_role("option", name="acme/dates-r16", exact=True).click()
    lineage = page.locator("#browse-lineage")
    sync_api.expect(lineage).to_contain_text("acme/dates-r16")
    image = page.locator("#browse-card img")
    sync_api.expect(image).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#browse-card img')]"
        ".some(img => img.complete && img.naturalWidth > 0)"
    )
    sync_api.expect(lineage).to_contain_text("lora.r")
    sync_api.expect(lineage).to_contain_text("(local path)")
    assert "/home/alice" not in lineage.inner_text()
    assert lineage.locator("pre code").count() == 1  # the job YAML as a code block
    metrics = {r["metric"]: r for r in table(page, "browse-rev-metrics")}
    assert metrics["dates/exact_match"][SHA[:12]] == "0.71"
    assert metrics["dates/exact_match"][OLD_SHA[:12]] == "0.61"
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "tab-browse.png"), full_page=True)


def battle_and_vote(page, button: str = "#vote-a") -> str:
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-prompt textarea").fill("March 3, 24")
    page.locator("#arena-run").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Vote: which", timeout=60_000)
    page.locator(button).click()
    sync_api.expect(page.locator("#status")).to_contain_text("Vote recorded")
    return page.locator("#arena-reveal").inner_text()


def test_arena_ratings_show_intervals_and_a_battle_takes_one_vote(page):
    reveal = battle_and_vote(page)
    assert "A was" in reveal
    page.locator("#vote-b").click()  # the same battle again
    sync_api.expect(page.locator("#status")).to_contain_text("already has its vote")
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "tab-arena.png"), full_page=True)
    page.get_by_role("tab", name="Leaderboard").click()
    sync_api.expect(page.locator("#lb-caption")).to_contain_text("1 arena vote(s)")
    played = [r for r in table(page, "lb-table") if r["arena_games"] != "0"]
    assert len(played) == 2
    assert all(" to " in r["arena_95ci"] for r in played)
    # The arena's columns sit at the table's right end: scrolled into view for the picture.
    page.locator("#lb-table").evaluate(SCROLL_RIGHT_JS)
    settle(page)
    page.locator("#lb-table").screenshot(path=str(SCREENSHOTS / "tab-leaderboard-arena.png"))


def test_votes_survive_a_restart_with_a_fresh_disk(
    page, tmp_path, standin_url, hub_server, monkeypatch
):
    from huggingface_hub import HfApi

    from loradock.spaces.app import build_app

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("LORADOCK_ARENA_PUSH_MINUTES", "0.01")  # the scheduler pushes often
    settings = {"endpoint": standin_url, "arena_dataset": "acme/arena-votes"}
    demo = build_app(arena_db=tmp_path / "disk1" / "arena.sqlite", **settings)
    with launched(demo) as url:
        first = open_page(page.context.browser, url)
        battle_and_vote(first)
        first.close()
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    deadline = time.monotonic() + 60
    while not any(
        f.startswith("votes/") for f in api.list_repo_files("acme/arena-votes", repo_type="dataset")
    ):
        assert time.monotonic() < deadline, "the vote never reached the dataset repo"
        time.sleep(0.5)

    fresh = build_app(arena_db=tmp_path / "disk2" / "arena.sqlite", **settings)
    with launched(fresh) as url:
        second = open_page(page.context.browser, url)
        second.get_by_role("tab", name="Leaderboard").click()
        sync_api.expect(second.locator("#lb-caption")).to_contain_text("1 arena vote(s)")
        second.screenshot(path=str(SCREENSHOTS / "tab-leaderboard-restored.png"), full_page=True)
        second.close()
