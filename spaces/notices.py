"""The status line and toast a handler raises when something went wrong (both inert)."""

from __future__ import annotations

import gradio as gr

try:
    from .markup import md_text, toast_text
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from markup import md_text, toast_text  # type: ignore[no-redef]


def warn(message: str) -> str:
    """Raise ``message`` as a toast and return it as a status line, both inert."""
    gr.Warning(toast_text(message))
    return f"⚠️ {md_text(message)}"
