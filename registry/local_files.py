"""File primitives of the folder store (``LocalHub``): safe repo paths, atomic writes, and
copies hashed on the way.

Everything the folder store writes lands whole or not at all (a temporary file in the same
folder, fsynced, then ``os.replace`` and an fsync of the folder), and no repo path can leave
its folder.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loradock.errors import InvalidNameError, StoreError

_CHUNK = 1 << 20
# Folders upload_folder never sends (as huggingface_hub's upload_folder ignores .git/).
IGNORED_DIRS = frozenset({".git", ".cache"})


def walk_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a sorted, checked repo path (``a/b.txt``)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            out.append(safe_relpath(rel))
    return out


def safe_relpath(path: str) -> str:
    """A repo file path that cannot leave its folder."""
    parts = path.split("/")
    if (
        not path
        or "\\" in path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "\x00" in path
    ):
        raise InvalidNameError(
            f"Invalid file path {path!r} in a repo: use a relative path without '..', "
            "a leading '/', or backslashes."
        )
    return path


def read_refs(folder: Path) -> dict[str, str]:
    """``{ref name: sha}`` of a ``refs/heads`` or ``refs/tags`` folder (empty if absent)."""
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(folder.iterdir()) if p.is_file()}


def copy_to_temp(src: Path, folder: Path, *, prefix: str) -> tuple[Path, str, int]:
    """Copy ``src`` to a new temporary file in ``folder``, hashing it on the way.

    Returns ``(temporary path, sha256, size)``; the caller moves the file into place (or
    removes it) once the hash is checked, so a bad copy never lands under its real name.
    """
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())  # on disk before any commit can name it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), digest.hexdigest(), size


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` whole (fsynced temporary file, then ``os.replace``)."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def disk_errors(repo_id: str) -> Iterator[None]:
    """A failed write (disk full, read-only, quota) as a StoreError; nothing was committed:
    the temporary files are gone and the refs still name the commits they named before."""
    try:
        yield
    except OSError as exc:
        raise StoreError(
            f"Cannot write {repo_id!r} in the local hub: {exc.strerror or exc}. Nothing was "
            "committed; free space (or fix the folder's permissions) and try again."
        ) from exc


def fsync_dir(folder: Path) -> None:
    """Make the names in ``folder`` durable (a renamed file survives a power cut)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_hidden_files(folder: Path, *, dry_run: bool = False) -> list[Path]:
    """Remove the dot-files of ``folder``: temporary files of writers killed before their
    ``os.replace``. Only call it while holding the lock every writer of ``folder`` takes."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(".") and p.is_file()]
    for path in found if not dry_run else ():
        path.unlink(missing_ok=True)
    return found


__all__ = [
    "IGNORED_DIRS",
    "copy_to_temp",
    "disk_errors",
    "fsync_dir",
    "read_refs",
    "remove_hidden_files",
    "safe_relpath",
    "walk_files",
    "write_atomic",
]
