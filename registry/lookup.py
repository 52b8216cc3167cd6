"""Reading a revision from a store: the head lookup every facade method starts from, with
errors that name the repo and say what to do (never a folder of this machine)."""

from __future__ import annotations

import logging
from pathlib import Path

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    CardError,
    RevisionNotFoundError,
)
from loradock.registry.card import AdapterCard
from loradock.registry.names import DEFAULT_REVISION, is_sha
from loradock.registry.store import RepoInfo, Store

logger = logging.getLogger(__name__)


def head(
    store: Store, repo_id: str, revision: str | None, *, allow_private: bool = True
) -> RepoInfo:
    """The store's view of a revision (sha, files, private flag), with alias-aware errors.
    Without ``allow_private`` a private repo is reported exactly as a missing one: a caller
    who may not read it learns nothing about it."""
    revision = revision or DEFAULT_REVISION
    missing = f"No repo {repo_id!r} in the {store.name} store; check the name or publish it."
    if not allow_private:
        missing += " Private repos are resolved only with LORADOCK_ALLOW_PRIVATE=1."
    try:
        info = store.repo_info(repo_id, revision=revision)
    except AdapterNotFoundError:
        raise AdapterNotFoundError(missing) from None
    except RevisionNotFoundError:
        if is_sha(revision) or revision == DEFAULT_REVISION:
            raise RevisionNotFoundError(
                f"Revision {revision!r} not found in {repo_id!r}; `loradock registry show "
                f"{repo_id}` lists its revisions."
            ) from None
        tags = store.list_refs(repo_id).tags
        raise AliasNotFoundError(no_alias_message(repo_id, revision, tags)) from None
    if info.private and not allow_private:
        logger.info("Refused to resolve the private repo %s (allow_private is off)", repo_id)
        raise AdapterNotFoundError(missing)
    return info


def no_alias_message(repo_id: str, alias: str, tags: dict[str, str]) -> str:
    known = ", ".join(sorted(tags)) or "none"
    return (
        f"Alias {alias!r} is not set on {repo_id!r} (aliases: {known}); set it with "
        f"`loradock registry alias set {repo_id} {alias} <sha>`."
    )


def card_or_none(folder: Path) -> AdapterCard | None:
    """A model folder's card; an unreadable one is logged and left out (a base still loads)."""
    try:
        return AdapterCard.from_repo_folder(folder)
    except CardError as exc:
        logger.warning("Ignoring the unreadable card in %s: %s", folder, exc)
        return None


__all__ = ["card_or_none", "head", "no_alias_message"]
