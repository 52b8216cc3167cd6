"""Verified local snapshots of resolved revisions: ``<cache>/<org>/<name>/<sha>/``.

A revision's files are fetched once, every file checked against the sizes and sha256 hashes
the store reports, and a marker written last (``.loradock-snapshot.json``), so a folder with
a marker is a verified copy of the files the marker lists. An adapter's snapshot holds only
the adapter's files (``adapter_fetch``); a caller that needs more of the revision (a card
update copies every file) adds the rest to the same folder. Later resolves trust the marker
after a cheap check (each file still has the size and modification time it had when
verified) and never touch the store for a pinned sha of a public repo, which makes a second
resolve cheap and offline. The marker records whether the repo was private, so that a
private revision cached by someone allowed to read it is not served from the cache to
callers who are not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock, Timeout

from loradock.errors import IntegrityError, StoreError
from loradock.registry.names import is_sha, validate_repo_id
from loradock.registry.store import RepoFile, Store, sha256_file

MARKER = ".loradock-snapshot.json"


class SnapshotCache:
    """Folders of verified revisions under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path_for(self, repo_id: str, sha: str) -> Path:
        validate_repo_id(repo_id)
        if not is_sha(sha):
            raise IntegrityError(f"Snapshots are kept per commit sha, got {sha!r}.")
        return self.root / repo_id / sha

    def get(
        self,
        repo_id: str,
        sha: str,
        *,
        require: Iterable[str] = (),
        public_only: bool = False,
    ) -> Path | None:
        """The snapshot folder if it is present, still as verified and holds every path in
        ``require``; with ``public_only``, only a revision fetched from a public repo."""
        path = self.path_for(repo_id, sha)
        marker = _read_marker(path)
        if marker is None or not set(require) <= set(marker["files"]):
            return None
        if public_only and marker.get("private", True):
            return None  # private, or fetched before the flag was recorded: ask the store
        return path

    def fetch(
        self,
        store: Store,
        repo_id: str,
        sha: str,
        files: Iterable[RepoFile],
        *,
        private: bool,
    ) -> Path:
        """Make sure the snapshot of ``repo_id@sha`` holds ``files``: those it lacks are
        downloaded from ``store`` (only those), each checked against the size and (where the
        store knows it) sha256 listed; files already verified stay as they are. ``private``
        (the repo's flag now) is recorded for :meth:`get`. Returns the folder."""
        wanted = list(files)
        path = self.path_for(repo_id, sha)
        if _holds(_read_marker(path), wanted, private):
            return path  # the common case, without taking the lock
        where = f"{repo_id}@{sha}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(path) + ".lock", timeout=600):
                return self._fetch_locked(store, repo_id, sha, wanted, private, where)
        except Timeout:
            raise StoreError(
                f"{where} is being fetched by another process that has not finished in 10 "
                "minutes; retry later."
            ) from None

    def _fetch_locked(
        self,
        store: Store,
        repo_id: str,
        sha: str,
        wanted: list[RepoFile],
        private: bool,
        where: str,
    ) -> Path:
        path = self.path_for(repo_id, sha)
        marker = _read_marker(path)  # another process may have fetched meanwhile
        if _holds(marker, wanted, private):
            return path
        for left in path.parent.glob(f".{sha[:12]}-*"):  # of fetches killed holding this lock
            shutil.rmtree(left, ignore_errors=True)
        held = marker["files"] if marker is not None else {}
        missing = [f for f in wanted if f.path not in held]
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{sha[:12]}-"))
        try:
            if missing:
                store.snapshot_download(
                    repo_id, revision=sha, local_dir=staging, files=[f.path for f in missing]
                )
            recorded = _verify(staging, missing, where)
            if marker is None:
                if path.exists():
                    shutil.rmtree(path)  # an unverified or altered copy: replaced whole
                _write_marker(staging, recorded, private)
                os.replace(staging, path)
                return path
            # A verified copy lacking some files: the new ones join it, the marker last.
            for rel in recorded:
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, path / rel)
            _write_marker(path, {**held, **recorded}, private)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path


def _read_marker(path: Path) -> dict | None:
    """The marker of a snapshot whose files are all still as verified, else ``None``."""
    try:
        marker = json.loads((path / MARKER).read_text())
        recorded = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for rel, entry in recorded.items():
        try:
            st = (path / rel).stat()
        except OSError:
            return None
        if st.st_size != entry["size"] or st.st_mtime_ns != entry["mtime_ns"]:
            return None
    return marker


def _holds(marker: dict | None, wanted: list[RepoFile], private: bool) -> bool:
    return (
        marker is not None
        and marker.get("private") == private
        and all(f.path in marker["files"] for f in wanted)
    )


def _write_marker(folder: Path, files: dict[str, dict], private: bool) -> None:
    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"files": files, "private": private}, indent=1))
    os.replace(tmp, folder / MARKER)


def _verify(folder: Path, files: list[RepoFile], where: str) -> dict[str, dict]:
    recorded: dict[str, dict] = {}
    for f in files:
        local = folder / f.path
        if not local.is_file():
            raise IntegrityError(
                f"{where}: the download lacks {f.path!r}; the store is incomplete, republish it."
            )
        st = local.stat()
        if st.st_size != f.size:
            raise IntegrityError(
                f"{where}: {f.path!r} has {st.st_size} bytes, expected {f.size}; download again."
            )
        if f.sha256:
            digest = sha256_file(local)
            if digest != f.sha256:
                raise IntegrityError(
                    f"{where}: {f.path!r} has sha256 {digest}, expected {f.sha256}: the "
                    "store's copy is corrupt; republish the revision."
                )
        recorded[f.path] = {"size": st.st_size, "sha256": f.sha256, "mtime_ns": st.st_mtime_ns}
    return recorded
