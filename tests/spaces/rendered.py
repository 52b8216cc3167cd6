"""What a reviewer reads: the Space's Markdown rendered as the page renders it, as text.

Values in the page are escaped (spaces/markup.py), so tests compare the rendered text,
not the Markdown source.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

_RENDER = MarkdownIt("commonmark").enable("table")


def rendered_html(markdown: str) -> str:
    return _RENDER.render(markdown)


def shown(markdown: str) -> str:
    """The text of ``markdown`` once rendered, tags dropped, on one line per block."""
    text = re.sub(r"<[^>]+>", "", rendered_html(markdown))
    return html.unescape(text).strip()
