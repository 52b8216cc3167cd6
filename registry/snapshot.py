"""Verified local snapshots of resolved revisions: ``<cache>/<org>/<name>/<sha>/``.

A revision is fetched once, every file checked against the sizes and sha256 hashes the store
reports, and a marker written last (``.loradock-snapshot.json``), so a folder with a marker
is a complete, verified copy. Later resolves trust the marker after a cheap check (each
file still has the size and modification time it had when verified) and never touch the
store for a pinned sha, which makes a second resolve cheap and offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock

from loradock.errors import IntegrityError
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

    def get(self, repo_id: str, sha: str) -> Path | None:
        """The snapshot folder if it is present and still as verified; else ``None``."""
        path = self.path_for(repo_id, sha)
        marker = path / MARKER
        if not marker.is_file():
            return None
        try:
            recorded = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError):
            return None
        for rel, entry in recorded.items():
            try:
                st = (path / rel).stat()
            except OSError:
                return None
            if st.st_size != entry["size"] or st.st_mtime_ns != entry["mtime_ns"]:
                return None
        return path

    def fetch(self, store: Store, repo_id: str, sha: str, files: Iterable[RepoFile]) -> Path:
        """Download ``repo_id@sha`` from ``store`` unless a verified copy exists; verify each
        file's size and (where the store knows it) sha256; return the folder."""
        path = self.path_for(repo_id, sha)
        cached = self.get(repo_id, sha)
        if cached is not None:
            return cached
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=600):
            cached = self.get(repo_id, sha)  # another process may have finished meanwhile
            if cached is not None:
                return cached
            staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{sha[:12]}-"))
            try:
                store.snapshot_download(repo_id, revision=sha, local_dir=staging)
                recorded = _verify(staging, list(files), f"{repo_id}@{sha}")
                (staging / MARKER).write_text(json.dumps({"files": recorded}, indent=1))
                if path.exists():
                    shutil.rmtree(path)  # an unverified or altered copy: replaced whole
                os.replace(staging, path)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return path


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
