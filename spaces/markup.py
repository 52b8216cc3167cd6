"""Untrusted text made inert before it reaches the page.

Names, card values and endpoint messages come from the registry and from whatever
endpoint a visitor typed, so none of them may add links, images, headings, table rows
or HTML to the page. Markdown gets escaped text or code spans whose fence outgrows any
backtick run in the value; Gradio's toasts render HTML, so they get HTML-escaped text.
"""

from __future__ import annotations

import html
import re
from typing import Any

_MD_PUNCT = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
_BACKTICKS = re.compile(r"`+")


def one_line(value: Any) -> str:
    """``value`` as text on one line: a newline would end a table row or start a block."""
    return _LINE_BREAKS.sub(" ", str(value))


def md_text(value: Any) -> str:
    """Markdown that displays ``value`` literally (every ASCII punctuation backslash-escaped).

    Escaping ``:`` and ``.`` also stops bare URLs from becoming links.
    """
    return _MD_PUNCT.sub(r"\\\1", one_line(value))


def md_code(value: Any, *, in_table: bool = False) -> str:
    """``value`` as an inline code span that nothing inside can close early.

    The fence is one backtick longer than the longest run in the value; a value that
    starts or ends with a backtick or a space is padded with a space each side (CommonMark
    strips exactly one), so that edge stays content. In a table a ``|`` would split the
    cell even inside a code span, so it is escaped there (GFM turns ``\\|`` back into ``|``).
    """
    text = one_line(value)
    if not text:
        return ""
    if in_table:
        text = text.replace("|", "\\|")
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def toast_text(value: Any) -> str:
    """A message for ``gr.Warning``, which renders HTML: shown as typed, never as markup."""
    return html.escape(str(value))
