"""Fill the index from a store, incrementally: only commits the index has not seen are read.

A repo is an adapter when its commit holds ``adapter_config.json`` (PEFT's files, not the
card's tags, decide: a broken card must not turn an adapter into a "base"). Adapters are
fetched to read and validate their PEFT config; base and merged models are indexed from the
store's card metadata alone, so syncing never downloads a base model's weights.

Failures stay local: each repo is written in one transaction after everything about it has
been read, a repo whose head revision cannot be read is reported in ``SyncReport.errors``
and left as it was, and an older revision that cannot be read is reported and skipped. A
repo leaves the index only when the store answers "not found" for that repo; a listing that
fails raises before anything is removed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loradock.errors import AdapterNotFoundError, CardError, LoradockError
from loradock.registry.adapter_fetch import AdapterLimits, adapter_files, in_repo_terms, read_card
from loradock.registry.artifact import CONFIG_FILENAME, read_adapter
from loradock.registry.card import CARD_FILENAME, AdapterCard
from loradock.registry.index import Index
from loradock.registry.names import ALIAS_RE, DEFAULT_REVISION, validate_namespace
from loradock.registry.records import AdapterRecord, record_from_repo
from loradock.registry.snapshot import SnapshotCache
from loradock.registry.store import RepoInfo, Store

logger = logging.getLogger(__name__)

_MODEL_FILES = frozenset({CONFIG_FILENAME, CARD_FILENAME, "config.json"})


@dataclass(frozen=True)
class SyncReport:
    """What one :func:`sync` did. ``errors`` holds one line per repo or revision skipped."""

    repos_seen: int
    revisions_added: int
    repos_removed: int
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    repos_unchanged: int = 0  # head already indexed: only the aliases were refreshed

    @property
    def ok(self) -> bool:
        return not self.errors


def _card_from_metadata(info: RepoInfo) -> AdapterCard:
    """The card of a base/merged model from the YAML the store already parsed."""
    if not info.card_data:
        return AdapterCard(base_model_relation=None, library_name=None, pipeline_tag=None)
    try:
        text = yaml.safe_dump(dict(info.card_data), sort_keys=False)
    except yaml.YAMLError as exc:
        raise CardError(
            f"Card metadata of {info.repo_id}@{info.sha} is not plain YAML: {exc}"
        ) from None
    return AdapterCard.from_text(f"---\n{text}---\n")


def _adapter_parts(store: Store, info: RepoInfo, folder: Path) -> AdapterRecord:
    where = f"{info.repo_id}@{info.sha}"
    with in_repo_terms(folder, where):
        artifact = read_adapter(folder)
    card = read_card(folder, where)
    if card is None:  # PEFT files without a README: the adapter_config names the base
        card = AdapterCard(base_model=artifact.base_model)
    return record_from_repo(info, card, artifact)


def read_record(
    store: Store,
    info: RepoInfo,
    *,
    snapshots: SnapshotCache | None = None,
    limits: AdapterLimits | None = None,
) -> AdapterRecord:
    """The index record of one commit (``info`` from ``store.repo_info(repo, revision=sha)``).

    An adapter's own files (config, weights, card: never the rest of the revision, and
    nothing past ``limits.max_bytes``) are fetched into ``snapshots`` (the verified cache
    ``resolve`` reuses) or, without one, into a temporary folder removed afterwards.
    """
    if CONFIG_FILENAME not in {f.path for f in info.files}:
        return record_from_repo(info, _card_from_metadata(info), None)
    files = adapter_files(info, limits or AdapterLimits(allow_private=True))
    if snapshots is not None:
        folder = snapshots.fetch(store, info.repo_id, info.sha, files, private=info.private)
        return _adapter_parts(store, info, folder)
    with tempfile.TemporaryDirectory(prefix="loradock-sync-") as tmp:
        folder = store.snapshot_download(
            info.repo_id, revision=info.sha, local_dir=tmp, files=[f.path for f in files]
        )
        return _adapter_parts(store, info, Path(folder))


def _holds_a_model(info: RepoInfo) -> bool:
    # A new repo starts with an empty commit (the Hub's "initial commit" holds only
    # .gitattributes): it is history, not a model, and is not indexed.
    return any(f.path in _MODEL_FILES for f in info.files)


def alias_tags(store: Store, repo_id: str) -> dict[str, str]:
    """The repo's tags that are loradock aliases (``prod``); release tags such as ``v1.0``
    on a Hub repo are not aliases and are left out rather than failing the repo."""
    tags = store.list_refs(repo_id).tags
    return {t: s for t, s in tags.items() if ALIAS_RE.fullmatch(t) and t != DEFAULT_REVISION}


def _describe(exc: Exception) -> str:
    if isinstance(exc, LoradockError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def sync_repo(
    store: Store,
    index: Index,
    repo_id: str,
    *,
    snapshots: SnapshotCache | None = None,
    errors: list[str] | None = None,
    limits: AdapterLimits | None = None,
) -> int:
    """Index every commit of ``repo_id``'s history (and every alias target) not yet indexed.

    Marks the head of ``main`` as latest and replaces the repo's aliases with the store's
    tags, all in one transaction. Returns how many revisions were added. Raises if the head
    cannot be read; an older revision that cannot be read is appended to ``errors`` (logged
    when ``errors`` is None) and skipped.
    """
    head = store.repo_info(repo_id)
    commits = store.list_commits(repo_id)
    aliases = alias_tags(store, repo_id)
    known = index.known_shas(repo_id)
    wanted = [c.sha for c in reversed(commits) if c.sha not in known]  # oldest first
    wanted += [s for s in dict.fromkeys(aliases.values()) if s not in known and s not in wanted]
    if head.sha not in known and head.sha not in wanted:
        wanted.append(head.sha)

    if not _holds_a_model(head):
        return 0  # created but nothing uploaded yet: nothing to index
    records: list[AdapterRecord] = []
    for sha in wanted:
        try:
            info = head if sha == head.sha else store.repo_info(repo_id, revision=sha)
            if not _holds_a_model(info):
                continue
            record = read_record(store, info, snapshots=snapshots, limits=limits)
        except Exception as exc:
            if sha == head.sha:
                raise
            line = f"{repo_id}@{sha}: skipped: {_describe(exc)}"
            if errors is None:
                logger.warning(line)
            else:
                errors.append(line)
            continue
        records.append(record)
    with index.transaction():
        index.upsert_many(records)
        index.set_latest(repo_id, head.sha)
        index.set_aliases(repo_id, aliases)
    return len(records)


def _confirmed_gone(store: Store, repo_id: str, errors: list[str]) -> bool:
    """True when the store says ``repo_id`` does not exist (a 404 for that very repo)."""
    try:
        store.repo_info(repo_id)
    except AdapterNotFoundError as exc:
        if getattr(exc, "confirmed", True):
            return True
        errors.append(f"{repo_id}: not listed and not readable (kept): {_describe(exc)}")
        return False
    except Exception as exc:  # unreachable, 5xx, 429: nothing is confirmed
        errors.append(f"{repo_id}: not listed, could not be checked (kept): {_describe(exc)}")
        return False
    errors.append(f"{repo_id}: not listed by the store but still exists (kept)")
    return False


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]sync[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout stays clean for --json
        disable=not enabled,
        transient=True,
    )


def sync(
    store: Store,
    index: Index,
    *,
    author: str | None = None,
    progress: bool = True,
    snapshots: SnapshotCache | None = None,
    limits: AdapterLimits | None = None,
) -> SyncReport:
    """Bring ``index`` up to date with ``store``: new repos and commits, moved aliases, and
    repos deleted from the store.

    One listing finds every model repo (adapters are the ``peft``-tagged ones, base and merged
    models the rest); a repo whose head is already indexed costs one ``list_refs`` call.
    ``author`` limits the sync to one namespace: use it against huggingface.co, where the
    full listing is the whole Hub.
    """
    if author is not None:
        validate_namespace(author)  # before any listing: a bad name must not scope removals
    started = time.perf_counter()
    errors: list[str] = []
    added = unchanged = 0
    listed = {info.repo_id: info for info in store.list_repos(author=author)}
    with _progress(progress) as bar:
        task = bar.add_task("", total=len(listed))
        for repo_id, listed_info in listed.items():
            bar.update(task, description=repo_id)
            try:
                if listed_info.sha and index.latest_sha(repo_id) == listed_info.sha:
                    aliases = alias_tags(store, repo_id)
                    if set(aliases.values()) <= index.known_shas(repo_id):
                        if index.aliases(repo_id) != aliases:
                            index.set_aliases(repo_id, aliases)
                        unchanged += 1
                        continue
                added += sync_repo(
                    store, index, repo_id, snapshots=snapshots, errors=errors, limits=limits
                )
            except Exception as exc:  # one bad repo never aborts the sync
                errors.append(f"{repo_id}: not indexed: {_describe(exc)}")
            finally:
                bar.advance(task)

    # A repo gone from the store is gone from the index (within the namespace listed), once
    # the store confirms it for that repo: a listing can miss repos it may not show (a token
    # lost or expired, private repos) and those keep their rows.
    unlisted = [
        r
        for r in index.repos()
        if r not in listed and (author is None or r.startswith(f"{author}/"))
    ]
    gone = [r for r in unlisted if _confirmed_gone(store, r, errors)]
    for repo_id in gone:
        index.remove_repo(repo_id)
    report = SyncReport(
        repos_seen=len(listed),
        revisions_added=added,
        repos_removed=len(gone),
        errors=errors,
        seconds=time.perf_counter() - started,
        repos_unchanged=unchanged,
    )
    for line in errors:
        logger.warning("sync: %s", line)
    return report
