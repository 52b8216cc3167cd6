"""The ``Registry`` facade: what training, serving, evals and the CLI call.

One object ties a store (``LocalHub`` by default, ``HfHub`` with ``LORADOCK_STORE=hf``), the
SQLite index and the verified snapshot cache together. Every write validates everything
first and touches the store only when all is well, so a bad input never leaves a half
published adapter or a changed index behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.errors import (
    AliasNotFoundError,
    ArtifactError,
    CardError,
)
from loradock.registry.adapter_fetch import (
    AdapterLimits,
)
from loradock.registry.artifact import (
    CONFIG_FILENAME,
    read_adapter,
)
from loradock.registry.card import AdapterCard, without_local_paths
from loradock.registry.lookup import head, no_alias_message
from loradock.registry.names import (
    DEFAULT_REVISION,
    parse_name,
    validate_alias,
    validate_repo_id,
)
from loradock.registry.publish_checks import check_against_base, check_size
from loradock.registry.records import AdapterRecord
from loradock.registry.resolution import Sources, resolve_adapter, resolve_model
from loradock.registry.results import (
    AdapterDetails,
    PublishedAdapter,
    ResolvedAdapter,
    ResolvedModel,
)
from loradock.registry.search_query import SearchQuery
from loradock.registry.snapshot import SnapshotCache
from loradock.registry.staging import (
    card_from_folder,
    check_model_weights,
    named_for_repo,
    staged_copy,
    write_card_and_config,
)
from loradock.registry.store import Store
from loradock.settings import Settings, get_settings

if TYPE_CHECKING:
    from loradock.registry.index import Index
    from loradock.registry.sync import SyncReport


class Registry:
    """Publish, find and resolve adapters. Build with :meth:`Registry.open`."""

    def __init__(self, store: Store, *, settings: Settings, index: Index | None = None):
        self.store = store
        self.settings = settings
        self._index = index
        self.snapshots = SnapshotCache(settings.cache_dir)

    @classmethod
    def open(cls, settings: Settings | None = None, *, store: Store | None = None) -> Registry:
        """The registry the settings describe (``LORADOCK_*``, ``HF_ENDPOINT``, ``HF_TOKEN``)."""
        settings = settings or get_settings()
        if store is None:
            if settings.store == "hf":
                from loradock.registry.hf_hub import HfHub

                store = HfHub(endpoint=settings.hf_endpoint, token=settings.token)
            else:
                from loradock.registry.local_hub import LocalHub

                store = LocalHub(settings.hub_dir)
        return cls(store, settings=settings)

    def __repr__(self) -> str:
        return f"Registry(store={self.store!r}, index={str(self.settings.index_path)!r})"

    @property
    def index(self) -> Index:
        """The SQLite index (opened on first use)."""
        if self._index is None:
            from loradock.registry.index import Index

            self.settings.index_path.parent.mkdir(parents=True, exist_ok=True)
            self._index = Index(self.settings.index_path)
        return self._index

    # -- writing -------------------------------------------------------------------------

    def publish(
        self,
        folder: str | Path,
        repo_id: str,
        *,
        card: AdapterCard | None = None,
        private: bool = False,
        commit_message: str | None = None,
        aliases: Iterable[str] = (),
        max_rank: int | None = None,
        allow_pickle: bool = False,
    ) -> PublishedAdapter:
        """Validate the adapter in ``folder``, upload it with its card as one commit, set
        ``aliases`` on that commit and index it. ``folder`` itself is never modified."""
        validate_repo_id(repo_id)
        aliases = tuple(validate_alias(a) for a in aliases)
        artifact = read_adapter(folder, allow_pickle=allow_pickle)
        card = card if card is not None else card_from_folder(Path(folder), artifact)
        if card.kind != "adapter":
            raise CardError(
                f"The card of {repo_id!r} has base_model_relation={card.base_model_relation!r}; "
                "an adapter needs 'adapter' (use publish_base for base or merged models)."
            )
        card = without_local_paths(named_for_repo(card, repo_id))
        card.validate()
        check_against_base(
            self.store, self.snapshots, artifact, card, max_rank=max_rank, allow_pickle=allow_pickle
        )
        check_size(artifact, repo_id, self.settings.max_adapter_bytes)

        message = (
            commit_message or f"Publish {repo_id} (LoRA r={artifact.rank} on {card.base_model})"
        )
        with staged_copy(Path(folder), allow_pickle=allow_pickle) as staged:
            write_card_and_config(staged, card, adapter=True)
            sha = self._upload(staged, repo_id, private=private, message=message)
        self._set_aliases(repo_id, aliases, sha)
        self._index_repo(repo_id)
        return PublishedAdapter(repo_id, sha, card, artifact, aliases, kind="adapter")

    def publish_base(
        self,
        folder: str | Path,
        repo_id: str,
        *,
        card: AdapterCard,
        private: bool = False,
        commit_message: str | None = None,
        aliases: Iterable[str] = (),
    ) -> PublishedAdapter:
        """Publish a base or merged model folder (``config.json`` + weights) with its card."""
        validate_repo_id(repo_id)
        aliases = tuple(validate_alias(a) for a in aliases)
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ArtifactError(f"{str(folder)!r} has no config.json: not a model folder.")
        check_model_weights(folder)
        if not isinstance(card, AdapterCard) or card.kind == "adapter":
            raise CardError(
                f"publish_base needs a base or merge card (build_base_card or "
                f"build_adapter_card(relation='merge')), got {card!r:.80}."
            )
        card = without_local_paths(named_for_repo(card, repo_id))
        card.validate()
        message = commit_message or f"Publish {card.kind} model {repo_id}"
        with staged_copy(folder) as staged:
            write_card_and_config(staged, card, adapter=False)
            sha = self._upload(staged, repo_id, private=private, message=message)
        self._set_aliases(repo_id, aliases, sha)
        self._index_repo(repo_id)
        return PublishedAdapter(repo_id, sha, card, None, aliases, kind=card.kind)

    def update_card(
        self, repo_id: str, card: AdapterCard, *, commit_message: str = "Update model card"
    ) -> PublishedAdapter:
        """A new revision of ``repo_id`` (latest on main) with ``card``; files and history kept."""
        validate_repo_id(repo_id)
        card.validate()
        info = head(self.store, repo_id, DEFAULT_REVISION)
        # Every file of the revision: the new commit carries them all over.
        current = self.snapshots.fetch(
            self.store, repo_id, info.sha, info.files, private=info.private
        )
        is_adapter = (current / CONFIG_FILENAME).is_file()
        if is_adapter != (card.kind == "adapter"):
            raise CardError(
                f"{repo_id!r} holds {'an adapter' if is_adapter else 'a model'}, but the new card "
                f"says base_model_relation={card.base_model_relation!r}."
            )
        card = without_local_paths(named_for_repo(card, repo_id))
        with staged_copy(current, allow_pickle=True) as staged:
            write_card_and_config(staged, card, adapter=is_adapter)
            new_sha = self._upload(staged, repo_id, private=None, message=commit_message)
        self._index_repo(repo_id)
        artifact = read_adapter(current) if is_adapter else None
        return PublishedAdapter(repo_id, new_sha, card, artifact, kind=card.kind)

    def set_alias(self, repo_id: str, alias: str, revision: str = DEFAULT_REVISION) -> str:
        """Point ``alias`` (``prod``, ``staging``) at ``revision``; returns the commit sha."""
        validate_repo_id(repo_id)
        validate_alias(alias)
        sha = head(self.store, repo_id, revision).sha
        self._set_aliases(repo_id, (alias,), sha)
        self._index_repo(repo_id)
        return sha

    def remove_alias(self, repo_id: str, alias: str) -> None:
        validate_repo_id(repo_id)
        validate_alias(alias)
        refs = self.store.list_refs(repo_id)
        if alias not in refs.tags:
            raise AliasNotFoundError(no_alias_message(repo_id, alias, refs.tags))
        self.store.delete_tag(repo_id, tag=alias)
        self._index_repo(repo_id)

    # -- reading -------------------------------------------------------------------------

    def resolve(self, name: str, *, max_rank: int | None = None) -> ResolvedAdapter:
        """``org/name`` (latest), ``org/name@<sha>`` or ``org/name@<alias>`` -> a verified local
        snapshot of the adapter's files (config, weights, card; nothing else of the revision).

        Before any weight is downloaded the revision is checked from the store's file list
        and its config and card (``adapter_fetch``): a PEFT LoRA adapter in safetensors, at
        most ``settings.max_adapter_bytes`` (``LORADOCK_MAX_ADAPTER_BYTES``), rank at most
        ``max_rank`` when given, a card without YAML anchors. Private repos resolve only
        with ``settings.allow_private`` (``LORADOCK_ALLOW_PRIVATE``). A pinned sha already in
        the cache is served without asking the store; with ``HF_HUB_OFFLINE=1`` an unpinned
        name is served from the sha the index holds for it when that snapshot is cached.
        Errors name the repo and revision, never a folder of this machine."""
        limits = AdapterLimits.from_settings(self.settings, max_rank=max_rank)
        return resolve_adapter(self._sources(), name, limits)

    def resolve_base(self, name_or_path: str | Path) -> ResolvedModel:
        """A base model: ``org/name[@rev]`` from the store, or an existing local model folder
        (for people at the CLI; servers must pass names only)."""
        return resolve_model(self._sources(), name_or_path)

    def search(self, query: SearchQuery | None = None, /, **fields: Any) -> list[AdapterRecord]:
        """Index rows matching ``query``; keyword ``fields`` of :class:`SearchQuery` build one
        (``registry.search(task="dates", sort="dates/exact_match")``) or replace those fields
        of ``query``. Latest revision per repo unless ``all_revisions=True``."""
        return self.index.search(dataclasses.replace(query or SearchQuery(), **fields))

    def compatible(
        self, base_model: str, *, max_rank: int | None = None, limit: int | None = 50
    ) -> list[AdapterRecord]:
        """Latest adapters trained on ``base_model`` (rank at most ``max_rank``), highest rank
        first; ``limit=None`` for all."""
        return self.index.compatible_with(base_model, max_rank=max_rank, limit=limit)

    def show(self, name: str) -> AdapterRecord:
        """The index row of ``org/name[@rev]`` (``@rev``: a sha or an alias); the index raises
        AdapterNotFoundError / RevisionNotFoundError / AliasNotFoundError itself."""
        ref = parse_name(name)
        return self.index.get(ref.repo_id, revision=ref.revision)

    def aliases(self, repo_id: str) -> dict[str, str]:
        """``{alias: sha}`` of an indexed repo (AdapterNotFoundError if it is not indexed)."""
        return self.index.aliases(repo_id)

    def revisions(self, repo_id: str) -> list[AdapterRecord]:
        """Every indexed revision of ``repo_id``, newest first."""
        return self.index.revisions(repo_id)

    def describe(self, name: str) -> AdapterDetails:
        """:meth:`show`, plus the repo's aliases and indexed revisions (newest first)."""
        record = self.show(name)
        return AdapterDetails(record, self.aliases(record.repo_id), self.revisions(record.repo_id))

    def sync(self, *, author: str | None = None, progress: bool = True) -> SyncReport:
        """Bring the index up to date with the store (only new revisions are read);
        ``author`` limits it to one namespace (use it against huggingface.co)."""
        from loradock.registry.sync import sync

        return sync(
            self.store,
            self.index,
            author=author,
            progress=progress,
            snapshots=self.snapshots,
            limits=self._sync_limits(),
        )

    # -- internals -----------------------------------------------------------------------

    def _upload(self, folder: Path, repo_id: str, *, private: bool | None, message: str) -> str:
        if private is not None:
            self.store.create_repo(repo_id, private=private, exist_ok=True)
        return self.store.upload_folder(repo_id, folder, commit_message=message).sha

    def _set_aliases(self, repo_id: str, aliases: Iterable[str], sha: str) -> None:
        tags = self.store.list_refs(repo_id).tags
        for alias in aliases:
            if tags.get(alias) != sha:
                self.store.move_tag(repo_id, tag=alias, revision=sha)

    def _index_repo(self, repo_id: str) -> None:
        from loradock.registry.sync import sync_repo

        sync_repo(
            self.store, self.index, repo_id, snapshots=self.snapshots, limits=self._sync_limits()
        )

    def _sync_limits(self) -> AdapterLimits:
        # Indexing reads what the store's token can read (the operator chose the store and
        # the namespace), private repos included; the size cap still holds.
        return AdapterLimits(self.settings.max_adapter_bytes, allow_private=True)

    def _sources(self) -> Sources:
        return Sources(self.store, self.snapshots, lambda: self.index)
