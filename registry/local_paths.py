"""Paths of the publisher's disk never travel in a published card.

A training job records where it wrote and read (``output_dir``, data files), and its YAML
is pasted into the card's body; published as is, every card would tell the world a user
name and a folder layout. :func:`strip_local_paths` replaces each absolute path of this
machine in a value (strings anywhere in nested dicts and lists, free text included) by its
last component, which is what a re-run needs (a job file resolves relative names next to
itself).

What counts as a local path: ``~/...`` and ``file:`` URIs, Windows drive and UNC paths,
and POSIX absolute paths whose first folder exists on this machine (``/home/...``,
``/tmp/...``), so that URL paths written in prose (``/v1/chat/completions``) stay as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import TypeVar

T = TypeVar("T")

# A path starts after a boundary (not inside a word, a relative path or a URL) and runs up
# to whitespace, a quote or the punctuation that closes it in YAML, Markdown or prose.
_END = r"""[^\s'"`<>|()\[\]{},;]"""
_PATH = re.compile(
    rf"""(?<![\w.~:/\\-])(?:file:{_END}+|~{_END}*|[A-Za-z]:[\\/]{_END}*|\\\\{_END}+|/{_END}+)"""
)


def strip_local_paths(value: T) -> T:
    """``value`` with every local path (see the module) replaced by its last component."""
    if isinstance(value, str):
        return _PATH.sub(_replace, value)  # type: ignore[return-value]
    if isinstance(value, Mapping):
        return {k: strip_local_paths(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(strip_local_paths(v) for v in value)  # type: ignore[return-value]
    return value


def _replace(match: re.Match[str]) -> str:
    path = match.group(0)
    if path.startswith("/") and not _is_local_root(path):
        return path
    windows = path.startswith("\\") or (len(path) > 1 and path[1] == ":" and "\\" in path)
    pure = PureWindowsPath(path) if windows else PurePosixPath(path.removeprefix("file:"))
    return pure.name or path


def _is_local_root(path: str) -> bool:
    """``/first/...`` where ``/first`` is a folder of this machine."""
    first = path.lstrip("/").split("/", 1)[0]
    return bool(first) and os.path.isdir(f"/{first}")


__all__ = ["strip_local_paths"]
