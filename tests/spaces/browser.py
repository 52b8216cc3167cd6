"""The browser tests' shared parts: the Space launched on 127.0.0.1 and headless Chromium.

Importing this module skips the importing test module when Debian's chromium or the
Python playwright package is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from space_standin import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
TIMEOUT_MS = 30_000
TABLE_JS = """(id) => {
  const root = document.getElementById(id);
  const head = [...root.querySelectorAll('thead th')].map(th => th.innerText.trim());
  // Body rows are virtual: divs with grid roles, only those scrolled into view rendered.
  const rows = [...root.querySelectorAll('div[role=row]')].map(row =>
    [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()));
  return {head, rows};
}"""

if not Path(CHROMIUM).exists():
    pytest.skip(
        "chromium is not installed (apt-get install chromium, or `make browser`)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright not installed")
pytest.importorskip("gradio", reason="gradio not installed")
# Assertions retry as long as actions wait: on a loaded 2-core machine a handler may queue
# behind others for seconds, and Playwright's 5 s default would fail a correct page.
sync_api.expect.set_options(timeout=TIMEOUT_MS)


@contextmanager
def launched(demo) -> Iterator[str]:
    """Serve a built Space (``build_app(...)``) on a free port; yields its URL."""
    from loradock.spaces.layout import CSS

    port = free_port()
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        demo.loradock_space.close()


def open_page(browser, url: str, *, connected: str = "Connected"):
    """A new page of ``browser`` on ``url``, once the status line reads ``connected``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    sync_api.expect(page.locator("#status")).to_contain_text(connected, timeout=TIMEOUT_MS)
    return page


@contextmanager
def browser_page(url: str, *, connected: str = "Connected") -> Iterator:
    """A Chromium page on ``url``, once the status line reads ``connected``.

    One per test module: Playwright's sync API runs one at a time in a process, so a
    test that needs another page opens it with ``open_page(page.context.browser, url)``.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield open_page(browser, url, connected=connected)
        finally:
            browser.close()


def settle(page) -> None:
    """Wait until no output shows Gradio's "queue" or "processing" overlay (for a clean
    screenshot, or a table read after its event ran)."""
    sync_api.expect(page.get_by_text("processing |")).to_have_count(0)
    sync_api.expect(page.get_by_text("queue: ")).to_have_count(0)


def table(page, elem_id: str) -> list[dict[str, str]]:
    """The rows of a gr.Dataframe as the page shows them, keyed by header."""
    data = page.evaluate(TABLE_JS, elem_id)
    return [dict(zip(data["head"], row, strict=False)) for row in data["rows"]]
