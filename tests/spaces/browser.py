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

if not Path(CHROMIUM).exists():
    pytest.skip(
        "chromium is not installed (apt-get install chromium, or `make browser`)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright not installed")
pytest.importorskip("gradio", reason="gradio not installed")


@contextmanager
def launched(demo) -> Iterator[str]:
    """Serve a built Space (``build_app(...)``) on a free port; yields its URL."""
    port = free_port()
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextmanager
def browser_page(url: str, *, connected: str = "Connected") -> Iterator:
    """A Chromium page on ``url``, once the status line reads ``connected``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            sync_api.expect(page.locator("#status")).to_contain_text(connected, timeout=TIMEOUT_MS)
            yield page
        finally:
            browser.close()
