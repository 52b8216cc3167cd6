"""Resolving from what this machine holds when the Hub may not be asked (``HF_HUB_OFFLINE=1``).

Offline, an unpinned name (``org/name``, ``org/name@prod``) is answered from the index (the
sha that ``main`` or the alias pointed at when the index was last synced) and the verified
snapshot cache; a pinned sha is answered from the cache as it always is. Nothing here reads
the store: what was never cached stays an error that says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from loradock.registry.names import AdapterRef
from loradock.registry.snapshot import SnapshotCache

if TYPE_CHECKING:
    from loradock.registry.index import Index

logger = logging.getLogger(__name__)

_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (the env var, or its constant as it is now)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    return bool(constants.HF_HUB_OFFLINE) or env


def cached_revision(
    index: Index,
    snapshots: SnapshotCache,
    ref: AdapterRef,
    *,
    require: Iterable[str] = (),
    public_only: bool = False,
) -> tuple[str, Path] | None:
    """``(sha, folder)`` of the revision the index names for ``ref`` when its verified
    snapshot is cached (holding ``require``); ``None`` otherwise."""
    try:
        record = index.get(ref.repo_id, revision=ref.revision)
    except LookupError:
        return None
    path = snapshots.get(ref.repo_id, record.sha, require=require, public_only=public_only)
    if path is None:
        return None
    logger.info("Offline: %s resolved from the index and cache to %s", ref, record.sha)
    return record.sha, path


__all__ = ["cached_revision", "hub_offline"]
