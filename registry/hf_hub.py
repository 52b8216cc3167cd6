"""``HfHub``: the store on the Hugging Face Hub (or any server speaking its API), via ``HfApi``.

Every call goes through huggingface_hub for real, so what loradock publishes is an ordinary
Hub repo: a PEFT folder plus a model card, revisions are Hub commits and aliases are Hub
tags (``org/name@prod`` means the same in ``hf_hub_download``). The endpoint and token
come from ``HF_ENDPOINT``/``HF_TOKEN`` unless given; the token never appears in a repr, a log
line or an error message. huggingface_hub's errors become loradock's, each naming the repo
(and revision) and saying what to do (``hf_errors.py``); every API call has a time limit,
``timeout_s`` (``hf_deadline.py``).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import ModelInfo

from loradock.errors import (
    AliasNotFoundError,
    CardError,
    InvalidNameError,
    RevisionNotFoundError,
    StoreError,
)
from loradock.registry.hf_deadline import deadline
from loradock.registry.hf_errors import mapped_errors
from loradock.registry.hf_verify import verify_snapshot
from loradock.registry.names import is_sha, validate_repo_id, validate_revision
from loradock.registry.store import (
    CommitInfo,
    RepoFile,
    RepoInfo,
    RepoRefs,
    RepoType,
)
from loradock.settings import get_settings

DEFAULT_ENDPOINT = "https://huggingface.co"
# How long one API call (a revision lookup, a listing's page, the refs, the commits) may wait
# for the Hub, retries included (hf_deadline.py): a server must not hang on a Hub that stalls.
DEFAULT_TIMEOUT_S = 30.0
# What list_repos asks the Hub for: enough to index a repo without one call per repo.
_LIST_EXPAND = ["author", "cardData", "createdAt", "lastModified", "private", "sha", "tags"]


class HfHub:
    """A :class:`~loradock.registry.store.Store` backed by a Hub-API server through ``HfApi``."""

    name = "hf"

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        settings = get_settings()
        self.timeout_s = timeout_s
        self.endpoint = (endpoint or settings.hf_endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._token = token if token is not None else settings.token
        # "" means anonymous (False to HfApi); None lets huggingface_hub use its saved login.
        api_token: str | bool | None = False if self._token == "" else self._token
        self._api = HfApi(endpoint=self.endpoint, token=api_token, library_name="loradock")

    def __repr__(self) -> str:
        return f"HfHub(endpoint={self.endpoint!r}, token={'<set>' if self._token else None})"

    # ------------------------------------------------------------------ writing
    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        exist_ok: bool = True,
        repo_type: RepoType = "model",
    ) -> str:
        validate_repo_id(repo_id)
        with self._mapped(f"create the {repo_type} repo", repo_id):
            url = self._api.create_repo(
                repo_id,
                private=private,
                exist_ok=exist_ok,
                repo_type=repo_type,
                # The Hub insists on an SDK for Spaces; loradock's Space is a Gradio app.
                space_sdk="gradio" if repo_type == "space" else None,
            )
        return str(url)

    def upload_folder(
        self,
        repo_id: str,
        folder: str | Path,
        *,
        commit_message: str,
        revision: str = "main",
        repo_type: RepoType = "model",
    ) -> CommitInfo:
        """One commit with the folder's files; unchanged files are skipped by the Hub client,
        so uploading identical content makes no new commit and returns the current head."""
        validate_repo_id(repo_id)
        validate_revision(revision)
        folder = Path(folder)
        if not folder.is_dir():
            raise StoreError(f"Cannot upload {str(folder)!r} to {repo_id!r}: not a folder.")
        with self._mapped("upload to", repo_id, revision, bounded=False):
            try:
                info = self._api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    commit_message=commit_message,
                    revision=revision,
                    repo_type=repo_type,
                )
            except ValueError as exc:
                if "README.md" not in str(exc):
                    raise
                # The Hub validated the card's YAML header and refused it.
                raise CardError(
                    f"The card {str(folder / 'README.md')!r} for {repo_id!r} was refused by "
                    f"{self.endpoint}: {exc}. Fix its YAML header and upload again."
                ) from exc
        return CommitInfo(repo_id=repo_id, sha=info.oid, message=commit_message)

    def create_tag(self, repo_id: str, *, tag: str, revision: str) -> None:
        """Point the new tag ``tag`` at ``revision``. Like the Hub (and ``LocalHub``), a tag
        never moves: tagging the commit it already marks is a no-op, another commit raises
        ``StoreError`` (:meth:`move_tag` moves one)."""
        validate_repo_id(repo_id)
        validate_revision(tag)
        validate_revision(revision)
        if is_sha(tag):
            raise InvalidNameError(f"Invalid tag {tag!r}: a tag cannot look like a commit sha.")
        with self._mapped("tag", repo_id, revision):
            try:
                self._api.create_tag(repo_id, tag=tag, revision=revision)
                return
            except HfHubHTTPError as exc:
                if exc.response is None or exc.response.status_code != 409:
                    raise
            current = {r.name: r.target_commit for r in self._api.list_repo_refs(repo_id).tags}
            wanted = (
                revision
                if is_sha(revision)
                else self._api.model_info(repo_id, revision=revision).sha
            )
        if current.get(tag) != wanted:
            raise StoreError(
                f"Tag {tag!r} of {repo_id!r} already points at {current.get(tag)}; delete it first."
            )

    def move_tag(self, repo_id: str, *, tag: str, revision: str) -> None:
        """The Hub cannot move a tag in one call: it is deleted, then created on ``revision``.
        A reader between the two sees no tag; the serving resolver keeps the last good sha
        meanwhile (``serving/resolver.py``)."""
        validate_repo_id(repo_id)
        current = self.list_refs(repo_id).tags.get(tag)
        if current is not None and current != revision:
            self.delete_tag(repo_id, tag=tag)
        self.create_tag(repo_id, tag=tag, revision=revision)

    def delete_tag(self, repo_id: str, *, tag: str) -> None:
        validate_repo_id(repo_id)
        validate_revision(tag)
        with self._mapped("delete a tag of", repo_id, tag, missing=AliasNotFoundError):
            self._api.delete_tag(repo_id, tag=tag)

    # ------------------------------------------------------------------ reading
    def list_repos(
        self,
        *,
        filter: Sequence[str] = (),
        author: str | None = None,
        search: str | None = None,
        limit: int | None = None,
    ) -> Iterator[RepoInfo]:
        """Model repos matching every tag in ``filter`` (the Hub's own tags, e.g. ``peft`` or
        ``base_model:adapter:<id>``), newest data per repo; follows the Hub's pagination.
        Listed repos carry no file list: call :meth:`repo_info` for files."""
        with self._mapped("list repos on", "*", bounded=False):
            models = self._api.list_models(  # lazy: each next() may fetch a page
                filter=list(filter) or None,
                author=author,
                search=search,
                limit=limit,
                expand=_LIST_EXPAND,
            )
            while True:
                # The limit is per page, set and reset here: never held across a yield.
                with deadline(self.timeout_s):
                    model = next(models, None)
                if model is None:
                    return
                yield _repo_info(model, files=())

    def repo_info(self, repo_id: str, *, revision: str | None = None) -> RepoInfo:
        validate_repo_id(repo_id)
        if revision is not None:
            validate_revision(revision)
        model = self._model_info(repo_id, revision)
        return _repo_info(model, files=_files(model))

    def list_refs(self, repo_id: str) -> RepoRefs:
        validate_repo_id(repo_id)
        with self._mapped("list the refs of", repo_id):
            refs = self._api.list_repo_refs(repo_id)
        return RepoRefs(
            branches={r.name: r.target_commit for r in refs.branches},
            tags={r.name: r.target_commit for r in refs.tags},
        )

    def list_commits(self, repo_id: str, *, revision: str = "main") -> list[CommitInfo]:
        """Commits reachable from ``revision``, newest first."""
        validate_repo_id(repo_id)
        validate_revision(revision)
        with self._mapped("list the commits of", repo_id, revision):
            commits = self._api.list_repo_commits(repo_id, revision=revision)
        return [
            CommitInfo(repo_id=repo_id, sha=c.commit_id, message=c.title, created_at=c.created_at)
            for c in commits
        ]

    def snapshot_download(
        self,
        repo_id: str,
        *,
        revision: str,
        local_dir: str | Path | None = None,
        files: Sequence[str] | None = None,
    ) -> Path:
        """Download the files of ``revision`` (only those named in ``files``, when given)
        pinned to its commit sha, then check each against the Hub's record (LFS sha256, else
        the git blob id); a mismatch raises :class:`~loradock.errors.IntegrityError`. Shows
        huggingface_hub's progress bar."""
        validate_repo_id(repo_id)
        validate_revision(revision)
        model = self._model_info(repo_id, revision)
        # Exact names as huggingface_hub's fnmatch patterns: '[', '*' and '?' escaped.
        patterns = None if files is None else [glob.escape(f) for f in files]
        with self._mapped("download", repo_id, model.sha, bounded=False):
            path = Path(
                self._api.snapshot_download(
                    repo_id,
                    revision=model.sha,
                    local_dir=str(local_dir) if local_dir else None,
                    # huggingface_hub reads HF_HUB_CACHE at import; honour it as it is now.
                    cache_dir=None if local_dir else _hf_cache_dir(),
                    allow_patterns=patterns,
                )
            )
        verify_snapshot(path, model, None if files is None else set(files))
        if local_dir:
            # huggingface_hub's bookkeeping for resumed downloads: not part of the revision.
            shutil.rmtree(path / ".cache" / "huggingface", ignore_errors=True)
            with suppress(OSError):
                (path / ".cache").rmdir()
        return path

    # ------------------------------------------------------------------ internals
    def _model_info(self, repo_id: str, revision: str | None) -> ModelInfo:
        with self._mapped("read", repo_id, revision):
            return self._api.model_info(repo_id, revision=revision, files_metadata=True)

    @contextmanager
    def _mapped(
        self,
        action: str,
        repo_id: str,
        revision: str | None = None,
        *,
        missing: type[RevisionNotFoundError] = RevisionNotFoundError,
        bounded: bool = True,
    ) -> Iterator[None]:
        """Map the block's errors to loradock's; ``bounded``: the block's API calls get
        ``timeout_s`` together (file transfers take as long as their files need)."""
        with mapped_errors(
            self.endpoint, action, repo_id, revision, token_set=bool(self._token), missing=missing
        ):
            if not bounded:
                yield
                return
            with deadline(self.timeout_s):
                yield


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(hf_home, "hub")


def _card_dict(model: ModelInfo) -> dict[str, Any]:
    card = model.card_data
    if card is None:
        return {}
    return card.to_dict() if hasattr(card, "to_dict") else dict(card)


def _files(model: ModelInfo) -> tuple[RepoFile, ...]:
    return tuple(
        RepoFile(
            path=s.rfilename,
            size=int(s.size if s.size is not None else (s.lfs.size if s.lfs else 0)),
            sha256=s.lfs.sha256 if s.lfs else None,
        )
        for s in (model.siblings or [])
    )


def _repo_info(model: ModelInfo, *, files: tuple[RepoFile, ...]) -> RepoInfo:
    return RepoInfo(
        repo_id=model.id,
        sha=model.sha or "",
        private=bool(model.private),
        tags=tuple(model.tags or ()),
        card_data=_card_dict(model),
        files=files,
        created_at=model.created_at,
        last_modified=model.last_modified,
    )


__all__ = ["DEFAULT_ENDPOINT", "HfHub"]
