"""``loradock registry gc``: remove what killed writers left behind, and prune old snapshots.

Leftovers: temporary files in the local hub's repos (``.incoming-*`` blobs, half-written refs
and commits; each repo under its writers' lock) and ``.partial-*`` copies under its
``.snapshots`` (``LocalHub.clean_leftovers``), staging folders of snapshot fetches nobody
holds any more (``.<sha>-*``, checked by taking the fetch's lock), scratch folders of config
checks (``.check-*``) and staged publish copies (``loradock-publish-*`` in the temp folder)
older than ``min_age_s``.

Pruning: in the snapshot cache, per repo, the ``keep`` newest revisions (the index's order;
revisions it does not know count as older, newest fetched first) stay, and so do the latest
revision and every aliased one; the rest are removed. A pruned revision is fetched again
(and verified again) the next time it is resolved.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from loradock.errors import ConfigError
from loradock.registry.names import is_sha
from loradock.registry.snapshot import MARKER

LEFTOVER_MIN_AGE_S = 3600.0


@dataclass(frozen=True)
class GcReport:
    """What :func:`collect_garbage` removed (or, with ``dry_run``, would remove)."""

    leftovers: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # org/name@sha
    kept: int = 0
    pruned_bytes: int = 0
    dry_run: bool = False


def collect_garbage(
    registry: Any, *, keep: int = 3, dry_run: bool = False, min_age_s: float = LEFTOVER_MIN_AGE_S
) -> GcReport:
    """Clean leftovers and prune the snapshot cache of ``registry`` (see the module)."""
    if keep < 1:
        raise ConfigError("Invalid gc options", [f"keep must be at least 1, got {keep}"])
    found: list[Path] = []
    clean = getattr(registry.store, "clean_leftovers", None)
    if clean is not None:
        found += clean(dry_run=dry_run)
    root = Path(registry.snapshots.root)
    found += _cache_leftovers(root, min_age_s, dry_run)
    found += _old_dirs(Path(tempfile.gettempdir()), "loradock-publish-*", min_age_s, dry_run)
    pruned, kept, pruned_bytes = _prune(registry, root, keep, dry_run)
    return GcReport([str(p) for p in found], pruned, kept, pruned_bytes, dry_run)


def _cache_leftovers(root: Path, min_age_s: float, dry_run: bool) -> list[Path]:
    found = _old_dirs(root, ".check-*", min_age_s, dry_run)
    for repo in _repo_dirs(root):
        for staging in sorted(repo.glob(".*-*")):
            lock = next(iter(sorted(repo.glob(f"{staging.name[1:].split('-')[0]}*.lock"))), None)
            if staging.is_dir() and _unheld(lock, staging, dry_run):
                found.append(staging)
    return found


def _unheld(lock: Path | None, folder: Path, dry_run: bool) -> bool:
    """Remove ``folder`` if no fetch holds ``lock`` (the fetch that made it was killed)."""
    if lock is None:
        return False
    try:
        with FileLock(str(lock), timeout=0):
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            return True
    except Timeout:
        return False  # a live fetch is using it


def _old_dirs(parent: Path, pattern: str, min_age_s: float, dry_run: bool) -> list[Path]:
    if not parent.is_dir():
        return []
    now = time.time()
    found = []
    for path in sorted(parent.glob(pattern)):
        try:
            old = now - path.stat().st_mtime >= min_age_s
        except OSError:
            continue
        if old and path.is_dir():
            found.append(path)
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
    return found


def _repo_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [
        p
        for p in sorted(root.glob("*/*"))
        if p.is_dir() and not p.name.startswith(".") and not p.parent.name.startswith(".")
    ]


def _prune(registry: Any, root: Path, keep: int, dry_run: bool) -> tuple[list[str], int, int]:
    pruned: list[str] = []
    kept = freed = 0
    for repo in _repo_dirs(root):
        repo_id = f"{repo.parent.name}/{repo.name}"
        shas = [p for p in repo.iterdir() if p.is_dir() and is_sha(p.name)]
        order, protected = _index_view(registry, repo_id)
        rank = {sha: i for i, sha in enumerate(order)}
        shas.sort(key=lambda p: (rank.get(p.name, len(rank)), -_mtime(p / MARKER)))
        for i, path in enumerate(shas):
            if i < keep or path.name in protected:
                kept += 1
                continue
            size = _size(path)
            if dry_run or _remove_snapshot(path):
                pruned.append(f"{repo_id}@{path.name}")
                freed += size
    return pruned, kept, freed


def _index_view(registry: Any, repo_id: str) -> tuple[list[str], set[str]]:
    """The repo's revisions newest first, and the shas gc must keep (latest and aliased)."""
    try:
        records = registry.revisions(repo_id)
        aliases = registry.aliases(repo_id)
    except LookupError:
        return [], set()
    latest = {r.sha for r in records if r.is_latest}
    return [r.sha for r in records], latest | set(aliases.values())


def _remove_snapshot(path: Path) -> bool:
    try:
        with FileLock(str(path) + ".lock", timeout=0):
            shutil.rmtree(path, ignore_errors=True)
    except Timeout:
        return False  # being fetched right now: left for the next gc
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    files = [path] if path.is_file() else [Path(d, n) for d, _, ns in os.walk(path) for n in ns]
    return sum(_stat_size(f) for f in files)


def _stat_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = ["GcReport", "LEFTOVER_MIN_AGE_S", "collect_garbage"]
