"""Folders of small text files, written for a test."""

from __future__ import annotations

from pathlib import Path


def text_folder(root: Path, name: str, files: dict[str, str]) -> Path:
    """``root/name`` holding ``files`` (relative path -> text)."""
    folder = root / name
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return folder
