"""How a name becomes a verified local snapshot: adapters and whole models (bases, merges).

A pinned sha already in the snapshot cache is served without asking the store. Otherwise the
store names the revision (``head``) and its files are fetched and verified; when the store
cannot be reached and the Hub may not be asked (``HF_HUB_OFFLINE=1``), the revision the index
holds for the name is served from the cache. Errors name the repo and revision, never a
folder of this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loradock.errors import (
    AdapterNotFoundError,
    BaseModelNotFoundError,
    IncompatibleAdapterError,
    InvalidNameError,
    StoreError,
)
from loradock.registry.adapter_fetch import (
    AdapterLimits,
    fetch_adapter,
    in_repo_terms,
    read_card,
)
from loradock.registry.artifact import CONFIG_FILENAME, WEIGHTS_FILENAME, read_adapter
from loradock.registry.compat import adapter_problems
from loradock.registry.lookup import card_or_none, head
from loradock.registry.names import AdapterRef, is_sha, parse_name
from loradock.registry.offline import cached_revision, hub_offline
from loradock.registry.results import ResolvedAdapter, ResolvedModel
from loradock.registry.snapshot import SnapshotCache
from loradock.registry.store import Store

if TYPE_CHECKING:
    from loradock.registry.index import Index

_ADAPTER_FILES = (CONFIG_FILENAME, WEIGHTS_FILENAME)


@dataclass(frozen=True)
class Sources:
    """Where revisions come from: the store, the verified snapshot cache and the index (opened
    only when it is asked: offline, for the revision it holds)."""

    store: Store
    snapshots: SnapshotCache
    index: Callable[[], Index]


def resolve_adapter(sources: Sources, name: str, limits: AdapterLimits) -> ResolvedAdapter:
    """An adapter name (``org/name``, ``@sha`` or ``@alias``) -> its checked local files."""
    ref = parse_name(name)
    path = _cached_adapter(sources, ref, limits)
    if path is None:
        try:
            info = head(
                sources.store, ref.repo_id, ref.revision, allow_private=limits.allow_private
            )
        except StoreError:
            found = _offline_revision(
                sources, ref, _ADAPTER_FILES, public_only=not limits.allow_private
            )
            if found is None:
                raise
            path = found[1]
        else:
            path = fetch_adapter(sources.store, sources.snapshots, info, limits)
    where = f"{ref.repo_id}@{path.name}"
    with in_repo_terms(path, where):
        artifact = read_adapter(path)
    problems = adapter_problems(artifact, max_rank=limits.max_rank)
    if problems:
        raise IncompatibleAdapterError(f"{where} cannot be served", problems)
    return ResolvedAdapter(ref.repo_id, path.name, path, read_card(path, where), artifact)


def resolve_model(sources: Sources, name_or_path: str | Path) -> ResolvedModel:
    """A whole model: ``org/name[@rev]`` from the store, or an existing local model folder."""
    local = Path(name_or_path).expanduser()
    if local.is_dir() and (local / "config.json").is_file():
        return ResolvedModel(None, None, local.resolve(), card_or_none(local))
    try:
        ref = parse_name(str(name_or_path))
    except InvalidNameError:
        raise BaseModelNotFoundError(
            f"Base model {str(name_or_path)!r} is neither a local model folder (with "
            "config.json) nor a registry name 'org/name[@revision]'."
        ) from None
    try:
        sha, path = model_snapshot(sources, ref.repo_id, ref.revision)
    except AdapterNotFoundError:
        raise BaseModelNotFoundError(
            f"Base model {str(name_or_path)!r} is neither in the registry "
            f"({sources.store.name} store) nor a local model folder. Import it first "
            "(loradock base import) or give a folder with config.json."
        ) from None
    return ResolvedModel(ref.repo_id, sha, path, card_or_none(path))


def model_snapshot(sources: Sources, repo_id: str, revision: str | None) -> tuple[str, Path]:
    """Every file of a revision (base and merged models: config, weights, tokenizer)."""
    if revision and is_sha(revision):
        cached = sources.snapshots.get(repo_id, revision)
        if cached is not None:
            return revision, cached
    try:
        info = head(sources.store, repo_id, revision)
    except StoreError:
        found = _offline_revision(sources, AdapterRef(repo_id, revision))
        if found is None:
            raise
        return found
    return info.sha, sources.snapshots.fetch(
        sources.store, repo_id, info.sha, info.files, private=info.private
    )


def _cached_adapter(sources: Sources, ref: AdapterRef, limits: AdapterLimits) -> Path | None:
    """A pinned sha's adapter snapshot, when the cache holds it (and, unless private repos
    are allowed, it was fetched from a public repo)."""
    if not ref.pinned:
        return None
    return sources.snapshots.get(
        ref.repo_id,
        ref.revision,
        require=_ADAPTER_FILES,
        public_only=not limits.allow_private,
    )


def _offline_revision(
    sources: Sources, ref: AdapterRef, require: tuple[str, ...] = (), *, public_only: bool = False
) -> tuple[str, Path] | None:
    """The cached revision the index names for ``ref``, when the Hub may not be asked."""
    if not hub_offline():
        return None
    return cached_revision(
        sources.index(), sources.snapshots, ref, require=require, public_only=public_only
    )


__all__ = ["Sources", "model_snapshot", "resolve_adapter", "resolve_model"]
