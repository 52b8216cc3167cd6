"""The files a card links (``training_loss.png``), read from a verified snapshot for a browser.

A reviewer's browser shows what this returns, so only what cannot run there is served:
images (PNG, JPEG, GIF, WebP) and plain text, typed from the file's suffix (never sniffed),
never HTML or SVG (documents that carry script). A path names a file of the revision in
the repo's own terms: relative, no ``..``, no hidden files (the snapshot's own marker is
one), no backslashes. The file is fetched into the revision's verified snapshot (size and
sha256 checked against the store) alone, at most ``MAX_FILE_BYTES``, and read without
following links: a link planted in the cache could otherwise point anywhere on the server.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import AdapterNotFoundError, RequestError
from loradock.registry.lookup import head

# The same bound as the Space's page: an image inlined there must stay small.
MAX_FILE_BYTES = 5 * 1024 * 1024
TEXT = "text/plain; charset=utf-8"
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".txt": TEXT,
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".yaml": TEXT,
    ".yml": TEXT,
    ".log": TEXT,
}
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_PATH_CHARS = 200


@dataclass(frozen=True)
class CardFile:
    """One file's bytes with the headers that keep a browser from reading it as a page."""

    data: bytes
    media_type: str
    name: str

    def headers(self) -> dict[str, str]:
        disposition = "inline" if self.media_type.startswith("image/") else "attachment"
        return {
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'{disposition}; filename="{self.name}"',
            # Opened on its own, the response may load nothing and run nothing.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }


def media_type_of(path: str) -> str:
    """The media type ``path`` is served as; a RequestError for a path or type refused."""
    parts = path.split("/")
    if len(path) > MAX_PATH_CHARS or not all(_PART.match(p) for p in parts):
        raise RequestError(
            f"{path[:MAX_PATH_CHARS]!r} is not a file path of the repo: a relative path of "
            "letters, digits, '_', '-' and '.' (no '..', no hidden files, no backslashes)."
        )
    suffix = Path(parts[-1]).suffix.lower()
    if suffix not in MEDIA_TYPES:
        raise RequestError(
            f"{path!r}: only images and text files of a card are served "
            f"({', '.join(sorted(MEDIA_TYPES))}); not HTML, SVG or weights."
        )
    return MEDIA_TYPES[suffix]


def read_card_file(registry: Any, repo_id: str, sha: str, path: str) -> CardFile:
    """``path`` of ``repo_id@sha`` from the verified snapshot (fetched alone if missing)."""
    media = media_type_of(path)
    allow_private = registry.settings.allow_private
    folder = registry.snapshots.get(repo_id, sha, require=[path], public_only=not allow_private)
    if folder is None:
        info = head(registry.store, repo_id, sha, allow_private=allow_private)
        listed = {f.path: f for f in info.files}
        if path not in listed:
            raise AdapterNotFoundError(f"{repo_id}@{sha} has no file {path!r}.")
        _check_size(listed[path].size, f"{repo_id}@{sha}", path)
        folder = registry.snapshots.fetch(
            registry.store, repo_id, sha, [listed[path]], private=info.private
        )
    return CardFile(_read_plain(folder, path, f"{repo_id}@{sha}"), media, path.split("/")[-1])


def _check_size(size: int, where: str, path: str) -> None:
    if size > MAX_FILE_BYTES:
        raise RequestError(
            f"{where}: {path!r} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit "
            "for a file a card links."
        )


def _read_plain(folder: Path, path: str, where: str) -> bytes:
    """The bytes of a regular file at ``folder/path``, no component of it a link."""
    current = folder
    for part in path.split("/"):
        current = current / part
        if current.is_symlink():
            raise RequestError(f"{where}: {path!r} is a link, not a file of the revision.")
    try:
        fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO never blocks
    except OSError:
        raise AdapterNotFoundError(f"{where} has no file {path!r}.") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise RequestError(f"{where}: {path!r} is not a plain file.")
        data = f.read(MAX_FILE_BYTES + 1)  # the cache may have changed since the check
    _check_size(len(data), where, path)
    return data
