"""The store interface: one protocol, two stores (``LocalHub`` and ``HfHub``).

A store holds repos with immutable revisions, as the Hugging Face Hub does: every upload is
a commit with a 40-hex sha, ``main`` is a moving branch, and aliases (``prod``,
``staging``) are Hub *tags* pointing at a commit, so ``org/name@prod`` resolves the same way
in loradock and in plain huggingface_hub. Method names and keyword options follow
huggingface_hub's ``HfApi`` (identity first, ``revision=``/``token=`` keyword-only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

RepoType = Literal["model", "space", "dataset"]

_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes (what ``RepoFile.sha256`` records), read in chunks."""
    return hash_file(path, hashlib.sha256())


def hash_file(path: Path, digest: Any) -> str:
    """Feed ``path`` into a ``hashlib`` object (pre-seeded if the hash needs a header)."""
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CommitInfo:
    """What an upload produced."""

    repo_id: str
    sha: str
    message: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None = None  # content hash where the store knows it (LFS / local manifest)


@dataclass(frozen=True)
class RepoInfo:
    """A repo at one resolved revision."""

    repo_id: str
    sha: str
    private: bool = False
    tags: tuple[str, ...] = ()
    card_data: dict[str, Any] = field(default_factory=dict)  # the README's YAML, as parsed
    files: tuple[RepoFile, ...] = ()
    created_at: datetime | None = None
    last_modified: datetime | None = None
    repo_type: RepoType = "model"


@dataclass(frozen=True)
class RepoRefs:
    """Branches and tags (aliases) of a repo, each mapped to a commit sha."""

    branches: dict[str, str]
    tags: dict[str, str]


@runtime_checkable
class Store(Protocol):
    """What the registry needs from a hub. Both stores pass the same behavioural tests."""

    name: str  # "local" or "hf", for messages

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        exist_ok: bool = True,
        repo_type: RepoType = "model",
    ) -> str: ...

    def upload_folder(
        self,
        repo_id: str,
        folder: str | Path,
        *,
        commit_message: str,
        revision: str = "main",
        repo_type: RepoType = "model",
    ) -> CommitInfo: ...

    def list_repos(
        self,
        *,
        filter: Sequence[str] = (),
        author: str | None = None,
        search: str | None = None,
        limit: int | None = None,
    ) -> Iterator[RepoInfo]: ...

    def repo_info(self, repo_id: str, *, revision: str | None = None) -> RepoInfo: ...

    def list_refs(self, repo_id: str) -> RepoRefs: ...

    def list_commits(self, repo_id: str, *, revision: str = "main") -> list[CommitInfo]: ...

    def create_tag(self, repo_id: str, *, tag: str, revision: str) -> None: ...

    def delete_tag(self, repo_id: str, *, tag: str) -> None: ...

    def move_tag(self, repo_id: str, *, tag: str, revision: str) -> None:
        """Point ``tag`` at ``revision``, whether it exists or not (an alias move)."""
        ...

    def snapshot_download(
        self,
        repo_id: str,
        *,
        revision: str,
        local_dir: str | Path | None = None,
        files: Sequence[str] | None = None,
    ) -> Path:
        """Copy ``revision``'s files into ``local_dir``: those named in ``files`` (exact repo
        paths; names the revision lacks are skipped), or every file when ``files`` is None."""
        ...
