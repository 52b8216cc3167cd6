"""What a publish checks before anything is written: the adapter against its base (when the
base is at hand, else the checks that need no base) and the size the registry would accept
when resolving it."""

from __future__ import annotations

import dataclasses
import logging

from loradock.errors import (
    AdapterNotFoundError,
    ArtifactError,
    IncompatibleAdapterError,
    RevisionNotFoundError,
)
from loradock.registry.artifact import CONFIG_FILENAME, WEIGHTS_FILENAME, AdapterArtifact
from loradock.registry.card import AdapterCard
from loradock.registry.compat import adapter_problems, check_compatibility
from loradock.registry.lookup import card_or_none, head
from loradock.registry.results import ResolvedModel
from loradock.registry.snapshot import SnapshotCache
from loradock.registry.store import Store

logger = logging.getLogger(__name__)


def check_against_base(
    store: Store,
    snapshots: SnapshotCache,
    artifact: AdapterArtifact,
    card: AdapterCard,
    *,
    max_rank: int | None,
    allow_pickle: bool,
) -> None:
    """The full check when the base is at hand; the base-free checks otherwise."""
    base = base_for_check(store, snapshots, card)
    if base is not None:
        # The card names the base (publish rewrites adapter_config to match it).
        named = dataclasses.replace(artifact, base_model=card.base_model)
        check_compatibility(named, base, max_rank=max_rank, allow_pickle=allow_pickle)
        return
    problems = adapter_problems(artifact, max_rank=max_rank)
    if problems:
        raise IncompatibleAdapterError(
            f"Adapter {str(artifact.folder)!r} cannot be published", problems
        )


def base_for_check(
    store: Store, snapshots: SnapshotCache, card: AdapterCard
) -> ResolvedModel | None:
    """The card's base if it is in the store and cheap to get: cached, or in a LocalHub.
    A remote base is not downloaded just to publish (weights can be many GB); the server
    checks again against the base it serves."""
    if not card.base_model:
        return None
    try:
        info = head(store, card.base_model, card.base_revision)
    except (AdapterNotFoundError, RevisionNotFoundError):
        logger.info("Base %s is not in the store; checking the adapter alone", card.base_model)
        return None
    sha = info.sha
    path = snapshots.get(card.base_model, sha, require=[f.path for f in info.files])
    if path is None and store.name == "local":
        path = snapshots.fetch(store, card.base_model, sha, info.files, private=info.private)
    if path is None:
        logger.info("Base %s@%s is not cached; checking the adapter alone", card.base_model, sha)
        return None
    return ResolvedModel(card.base_model, sha, path, card_or_none(path))


def check_size(artifact: AdapterArtifact, repo_id: str, max_bytes: int) -> None:
    """An adapter the registry would refuse to resolve is refused before it is uploaded."""
    size = sum(
        (artifact.folder / name).stat().st_size
        for name in (CONFIG_FILENAME, WEIGHTS_FILENAME)
        if (artifact.folder / name).is_file()
    )
    if size > max_bytes:
        raise ArtifactError(
            f"The adapter for {repo_id!r} is {size} bytes, over the limit of {max_bytes} bytes "
            "(LORADOCK_MAX_ADAPTER_BYTES) that resolving it would enforce; nothing was uploaded."
        )


__all__ = ["base_for_check", "check_against_base", "check_size"]
