"""Fetching an adapter revision: checked before any weight is downloaded, then only its files.

Anyone who can send the server a model name can make it resolve ``org/anything``, so a
resolve must not cost more than an adapter. In order:

1. the store's file list (one metadata call): ``adapter_config.json`` and
   ``adapter_model.safetensors`` are there (a pickle-only adapter is refused), the config
   and the card are small, and the files to fetch weigh at most ``max_bytes`` together;
2. ``adapter_config.json`` and ``README.md`` alone, into a scratch folder: a LoRA config
   within the rank limit, and a card that parses (no YAML anchors, bounded size);
3. config, weights and card, nothing else of the revision, into the verified snapshot cache.

Errors name the revision (``org/name@sha``), never a folder of this machine: they reach API
users. :class:`AdapterLimits` carries what the caller allows.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loradock.errors import (
    ArtifactError,
    CardError,
    IncompatibleAdapterError,
    LoradockError,
    ProblemsError,
    UnsafeArtifactError,
)
from loradock.registry.artifact import (
    CONFIG_FILENAME,
    PICKLE_FILENAME,
    WEIGHTS_FILENAME,
    read_adapter_config,
)
from loradock.registry.card import CARD_FILENAME, AdapterCard
from loradock.registry.card_yaml import check_card_size
from loradock.registry.compat import adapter_problems
from loradock.registry.snapshot import SnapshotCache
from loradock.registry.store import RepoFile, RepoInfo, Store
from loradock.settings import DEFAULT_MAX_ADAPTER_BYTES, Settings

# What a served adapter is made of; every other file of the revision stays on the store.
ADAPTER_FILES = (CONFIG_FILENAME, WEIGHTS_FILENAME, CARD_FILENAME)
# PEFT writes configs of a few KB (rank_pattern for every layer stays far below this).
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AdapterLimits:
    """What one resolve may fetch: bytes in all, the largest rank (None: any), and whether
    private repos count (the store's token may read them; the caller may not be its owner)."""

    max_bytes: int = DEFAULT_MAX_ADAPTER_BYTES
    max_rank: int | None = None
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, max_rank: int | None = None) -> AdapterLimits:
        return cls(settings.max_adapter_bytes, max_rank, settings.allow_private)


def adapter_files(info: RepoInfo, limits: AdapterLimits) -> tuple[RepoFile, ...]:
    """The files of ``info``'s revision an adapter fetch downloads, judged from the file list
    alone; raises before anything is downloaded when the revision is no adapter or too big."""
    where = f"{info.repo_id}@{info.sha}"
    listed = {f.path: f for f in info.files}
    if CONFIG_FILENAME not in listed:
        raise ArtifactError(
            f"{where} is not an adapter (no {CONFIG_FILENAME}); nothing was downloaded. "
            "Base and merged models are not served by name."
        )
    if WEIGHTS_FILENAME not in listed:
        if PICKLE_FILENAME in listed:
            raise UnsafeArtifactError(
                f"{where} holds its weights only as {PICKLE_FILENAME}, a pickle file, which can "
                "run code when loaded; it was not downloaded. Re-publish the adapter with "
                f"safe_serialization=True ({WEIGHTS_FILENAME})."
            )
        raise ArtifactError(f"{where} has no {WEIGHTS_FILENAME}: not a complete PEFT adapter.")
    if listed[CONFIG_FILENAME].size > MAX_CONFIG_BYTES:
        raise ArtifactError(
            f"{where}: {CONFIG_FILENAME} is {listed[CONFIG_FILENAME].size} bytes, over the "
            f"{MAX_CONFIG_BYTES}-byte limit for a PEFT config."
        )
    if CARD_FILENAME in listed:
        check_card_size(listed[CARD_FILENAME].size, f"The card of {where}")
    chosen = tuple(listed[p] for p in ADAPTER_FILES if p in listed)
    total = sum(f.size for f in chosen)
    if total > limits.max_bytes:
        raise ArtifactError(
            f"{where} is {total} bytes ({', '.join(f.path for f in chosen)}), over the limit "
            f"of {limits.max_bytes} bytes for one adapter (LORADOCK_MAX_ADAPTER_BYTES); it "
            "was not downloaded."
        )
    return chosen


def fetch_adapter(
    store: Store, snapshots: SnapshotCache, info: RepoInfo, limits: AdapterLimits
) -> Path:
    """Check ``info``'s revision (file list, then config and card) and fetch its adapter files
    into ``snapshots``; returns the verified folder. See the module for the order."""
    files = adapter_files(info, limits)
    cached = snapshots.get(info.repo_id, info.sha, require=[f.path for f in files])
    if cached is None:
        check_config_and_card(store, snapshots.root, info, limits)
    return snapshots.fetch(store, info.repo_id, info.sha, files, private=info.private)


def check_config_and_card(
    store: Store, scratch_root: Path, info: RepoInfo, limits: AdapterLimits
) -> None:
    """Download ``adapter_config.json`` and the card alone into a scratch folder (removed
    afterwards) and refuse a non-LoRA config, a rank over the limit or a card that does not
    parse, before the weights are asked for."""
    where = f"{info.repo_id}@{info.sha}"
    names = [p for p in (CONFIG_FILENAME, CARD_FILENAME) if p in {f.path for f in info.files}]
    scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=scratch_root, prefix=".check-"))
    try:
        store.snapshot_download(info.repo_id, revision=info.sha, local_dir=scratch, files=names)
        with in_repo_terms(scratch, where):
            config = read_adapter_config(scratch)
            read_card(scratch, where)
        problems = adapter_problems(config, max_rank=limits.max_rank)
        if problems:
            raise IncompatibleAdapterError(f"{where} cannot be served", problems)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_card(folder: Path, where: str) -> AdapterCard | None:
    """The card of a fetched revision; a CardError names ``where`` (the card's repo)."""
    try:
        return AdapterCard.from_repo_folder(folder)
    except CardError as exc:
        raise CardError(f"The card (README.md) of {where}: {exc}") from None


@contextmanager
def in_repo_terms(folder: Path, where: str) -> Iterator[None]:
    """Errors raised inside speak of ``where`` (``org/name@sha``) instead of ``folder``, a
    snapshot or scratch folder of this machine that a message must not show an API user."""
    try:
        yield
    except ProblemsError as exc:
        raise type(exc)(
            _renamed(exc.headline, folder, where),
            [_renamed(p, folder, where) for p in exc.problems],
        ) from None
    except LoradockError as exc:
        raise type(exc)(_renamed(str(exc), folder, where)) from None


def _renamed(text: str, folder: Path, where: str) -> str:
    return text.replace(str(folder), where)


__all__ = [
    "ADAPTER_FILES",
    "AdapterLimits",
    "adapter_files",
    "check_config_and_card",
    "fetch_adapter",
    "in_repo_terms",
    "read_card",
]
