"""LocalHub: a folder laid out like a bare Hub, the embedded default store.

    root/models/<org>/<name>/repo.json            private flag, creation time
                             objects/<sha256>      file contents, content-addressed
                             commits/<sha>.json    parent, message, time, {path: {sha256, size}}
                             refs/heads/main       commit sha of the branch
                             refs/tags/<alias>     commit sha an alias points at
    root/datasets/<org>/<name>/...                 the same, for dataset repos
    root/spaces/<org>/<name>/...                   the same, for Space repos
    root/.snapshots/<models|datasets|spaces>/<org>/<name>/<sha>/
                                                   ``snapshot_download``'s default target

Model repos are the registry's: listing, tags, ``repo_info`` and ``snapshot_download`` read
them unless told ``repo_type="dataset"`` (or ``"space"``), so a dataset or a Space can never
be resolved, indexed or served as an adapter or a base.

Revisions are immutable: a commit's sha is the sha1 of its JSON, and its files are blobs
named by their sha256, so nothing a commit points at can change without the change being
seen (``snapshot_download`` re-hashes every file it copies). Every write goes to a temporary
file first, is fsynced and lands with ``os.replace``; blobs are on disk before the commit that
names them, and the commit before the ref (``local_hub_repo``). A lock per repo serialises
writers (publishes and alias moves); the next writer removes what a killed one left
(``.incoming-*`` blobs, temporary refs), as does ``clean_leftovers`` (``loradock registry
gc``), which also removes the ``.partial-*`` copies a killed download left under
``.snapshots``. A repo or snapshot whose lock is held is being written: gc leaves it alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from loradock.errors import (
    AdapterNotFoundError,
    InvalidNameError,
    RevisionNotFoundError,
    StoreError,
)
from loradock.registry import local_hub_repo as repo_files
from loradock.registry.local_files import disk_errors, fsync_dir, read_refs, write_atomic
from loradock.registry.local_hub_repo import PARTIAL_PREFIX, parse_time
from loradock.registry.names import DEFAULT_REVISION, is_sha, validate_repo_id, validate_revision
from loradock.registry.store import CommitInfo, RepoFile, RepoInfo, RepoRefs, RepoType

_REPO_FOLDERS: dict[str, str] = {"model": "models", "dataset": "datasets", "space": "spaces"}
SNAPSHOTS_DIR = ".snapshots"


class LocalHub:
    """A Hub-shaped store in a local folder; implements ``registry.store.Store``."""

    name = "local"

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    # -- repos -------------------------------------------------------------------------

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        exist_ok: bool = True,
        repo_type: RepoType = "model",
    ) -> str:
        folder = self._repo_dir(repo_id, repo_type)
        with self._lock(folder), disk_errors(repo_id):
            if (folder / "repo.json").is_file():
                if not exist_ok:
                    raise StoreError(
                        f"Repo {repo_id!r} already exists in the local hub; pass "
                        "exist_ok=True to reuse it, or pick another name."
                    )
                return self._url(repo_id, repo_type)
            repo_files.init_repo(folder, repo_id, private=private)
        return self._url(repo_id, repo_type)

    def upload_folder(
        self,
        repo_id: str,
        folder: str | Path,
        *,
        commit_message: str,
        revision: str = DEFAULT_REVISION,
        repo_type: RepoType = "model",
    ) -> CommitInfo:
        """Commit every file under ``folder`` onto ``revision`` (a branch). Files already in
        the parent with the same content cost nothing; an upload that changes nothing makes
        no commit and returns the current head, as huggingface_hub does."""
        source = Path(folder)
        if not source.is_dir():
            raise StoreError(f"Cannot upload {str(source)!r}: not a folder.")
        validate_revision(revision)
        repo = self._existing_repo_dir(repo_id, repo_type)
        with self._lock(repo), disk_errors(repo_id):
            repo_files.clean(repo)
            return repo_files.commit_folder(
                repo, repo_id, source, revision=revision, message=commit_message
            )

    def list_repos(
        self,
        *,
        filter: Sequence[str] = (),
        author: str | None = None,
        search: str | None = None,
        limit: int | None = None,
    ) -> Iterator[RepoInfo]:
        """Model repos, sorted by id: ``filter`` tags must all be on the card, ``author`` is
        the namespace, ``search`` a substring of the repo id (case-insensitive, as on the Hub)."""
        wanted = [filter] if isinstance(filter, str) else list(filter)
        base = self.root / _REPO_FOLDERS["model"]
        if not base.is_dir():
            return
        count = 0
        for org_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if author is not None and org_dir.name != author:
                continue
            for repo_dir in sorted(p for p in org_dir.iterdir() if p.is_dir()):
                repo_id = f"{org_dir.name}/{repo_dir.name}"
                if search and search.lower() not in repo_id.lower():
                    continue
                if not (repo_dir / "repo.json").is_file():
                    continue
                info = self.repo_info(repo_id)
                if not all(tag in info.tags for tag in wanted):
                    continue
                yield info
                count += 1
                if limit is not None and count >= limit:
                    return

    def repo_info(
        self, repo_id: str, *, revision: str | None = None, repo_type: RepoType = "model"
    ) -> RepoInfo:
        repo = self._existing_repo_dir(repo_id, repo_type)
        sha = repo_files.resolve(repo, repo_id, revision or DEFAULT_REVISION)
        commit = repo_files.read_commit(repo, repo_id, sha)
        meta = json.loads((repo / "repo.json").read_text())
        card_data = repo_files.card_data(repo, commit["files"])
        tags = card_data.get("tags") or []
        return RepoInfo(
            repo_id=repo_id,
            sha=sha,
            private=bool(meta.get("private")),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            card_data=card_data,
            files=tuple(
                RepoFile(path, e["size"], e["sha256"])
                for path, e in sorted(commit["files"].items())
            ),
            created_at=parse_time(meta.get("created_at")),
            last_modified=parse_time(commit["created_at"]),
            repo_type=repo_type,
        )

    # -- refs and history ----------------------------------------------------------------

    def list_refs(self, repo_id: str) -> RepoRefs:
        repo = self._existing_repo_dir(repo_id, "model")
        return RepoRefs(
            branches=read_refs(repo / "refs" / "heads"), tags=read_refs(repo / "refs" / "tags")
        )

    def list_commits(
        self, repo_id: str, *, revision: str = DEFAULT_REVISION, repo_type: RepoType = "model"
    ) -> list[CommitInfo]:
        """History from ``revision`` back to the first commit, newest first."""
        repo = self._existing_repo_dir(repo_id, repo_type)
        sha: str | None = repo_files.resolve(repo, repo_id, revision)
        out = []
        while sha:
            commit = repo_files.read_commit(repo, repo_id, sha)
            created = parse_time(commit["created_at"])
            out.append(CommitInfo(repo_id, sha, commit["message"], created))
            sha = commit["parent"]
        return out

    def create_tag(self, repo_id: str, *, tag: str, revision: str) -> None:
        self._write_tag(repo_id, tag, revision, move=False)

    def move_tag(self, repo_id: str, *, tag: str, revision: str) -> None:
        """Point ``tag`` at ``revision``, created or moved in one atomic replace: a reader
        sees the old target or the new one, never no tag; concurrent moves serialise."""
        self._write_tag(repo_id, tag, revision, move=True)

    def _write_tag(self, repo_id: str, tag: str, revision: str, *, move: bool) -> None:
        validate_revision(tag)
        if is_sha(tag):
            raise InvalidNameError(f"Invalid tag {tag!r}: a tag cannot look like a commit sha.")
        repo = self._existing_repo_dir(repo_id, "model")
        with self._lock(repo), disk_errors(repo_id):
            repo_files.clean(repo)
            sha = repo_files.resolve(repo, repo_id, revision)
            path = repo / "refs" / "tags" / tag
            if path.is_file() and not move:
                current = path.read_text().strip()
                if current == sha:
                    return
                raise StoreError(
                    f"Tag {tag!r} of {repo_id!r} already points at {current}; delete it first."
                )
            write_atomic(path, sha)

    def delete_tag(self, repo_id: str, *, tag: str) -> None:
        validate_revision(tag)
        repo = self._existing_repo_dir(repo_id, "model")
        with self._lock(repo):
            path = repo / "refs" / "tags" / tag
            if not path.is_file():
                raise RevisionNotFoundError(
                    f"Tag {tag!r} does not exist in {repo_id!r} (tags: "
                    f"{', '.join(read_refs(repo / 'refs' / 'tags')) or 'none'})."
                )
            path.unlink()
            fsync_dir(path.parent)

    # -- leftovers -----------------------------------------------------------------------

    def clean_leftovers(self, *, dry_run: bool = False) -> list[Path]:
        """Remove what killed writers left: temporary files in every repo (models, datasets,
        Spaces) and ``.partial-*`` copies under ``.snapshots``. Each repo or snapshot is
        cleaned under its lock, taken without waiting: one being written is skipped (what
        it holds is live). ``dry_run`` only lists what would go."""
        removed: list[Path] = []
        for kind in _REPO_FOLDERS.values():
            for repo in _children(self.root / kind, "*/*"):
                if (repo / "repo.json").is_file():
                    removed += _if_unheld(self._lock(repo), repo_files.clean, repo, dry_run)
        for snapshot in _children(self.root / SNAPSHOTS_DIR, "*/*/*/*"):
            lock = FileLock(str(snapshot) + ".lock")
            removed += _if_unheld(lock, _remove_partials, snapshot, dry_run)
        return removed

    # -- downloads -----------------------------------------------------------------------

    def snapshot_download(
        self,
        repo_id: str,
        *,
        revision: str,
        local_dir: str | Path | None = None,
        files: Sequence[str] | None = None,
        repo_type: RepoType = "model",
    ) -> Path:
        """Copy ``revision``'s files (only those named in ``files``, when given) into
        ``local_dir`` (default: ``root/.snapshots/<kind>/<repo_id>/<sha>``), re-hashing each
        one; a blob that no longer matches its sha256 raises IntegrityError."""
        repo = self._existing_repo_dir(repo_id, repo_type)
        sha = repo_files.resolve(repo, repo_id, revision)
        tree = repo_files.read_commit(repo, repo_id, sha)["files"]
        wanted = tree if files is None else {p: tree[p] for p in files if p in tree}
        if local_dir is not None:
            with disk_errors(repo_id):
                repo_files.copy_out(repo, repo_id, sha, wanted, Path(local_dir))
            return Path(local_dir)
        target = self.root / SNAPSHOTS_DIR / _REPO_FOLDERS[repo_type] / repo_id / sha
        target.parent.mkdir(parents=True, exist_ok=True)
        # The lock tells gc this download is live; taken, it means any .partial-* under the
        # target is a killed download's, removed before copying again.
        with FileLock(str(target) + ".lock", timeout=600), disk_errors(repo_id):
            _remove_partials(target, dry_run=False)
            repo_files.copy_out(repo, repo_id, sha, wanted, target)
        return target

    # -- repo folders --------------------------------------------------------------------

    def _url(self, repo_id: str, repo_type: RepoType) -> str:
        return f"{self.root.as_uri()}/{_REPO_FOLDERS[repo_type]}/{repo_id}"

    def _repo_dir(self, repo_id: str, repo_type: RepoType) -> Path:
        validate_repo_id(repo_id)
        if repo_type not in _REPO_FOLDERS:
            raise InvalidNameError(
                f"Invalid repo_type {repo_type!r}: use one of {', '.join(_REPO_FOLDERS)}."
            )
        folder = (self.root / _REPO_FOLDERS[repo_type] / repo_id).resolve()
        if not folder.is_relative_to(self.root):  # defence in depth after validate_repo_id
            raise InvalidNameError(f"Invalid repo id {repo_id!r}: it leaves the hub folder.")
        return folder

    def _existing_repo_dir(self, repo_id: str, repo_type: RepoType) -> Path:
        folder = self._repo_dir(repo_id, repo_type)
        if not (folder / "repo.json").is_file():
            # The message may reach an API user: it names the repo, never the hub's folder.
            what = "Repo" if repo_type == "model" else f"{repo_type.capitalize()} repo"
            raise AdapterNotFoundError(
                f"{what} {repo_id!r} not found in the local hub: check the name, or publish "
                "it first."
            )
        return folder

    def _lock(self, folder: Path) -> FileLock:
        folder.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder) + ".lock", timeout=120)


def _children(base: Path, pattern: str) -> list[Path]:
    return sorted(p for p in base.glob(pattern) if p.is_dir()) if base.is_dir() else []


def _if_unheld(
    lock: FileLock, clean: Callable[..., list[Path]], folder: Path, dry_run: bool
) -> list[Path]:
    """``clean(folder, dry_run=)`` if nobody holds ``lock``; a held lock means a live writer."""
    try:
        with lock.acquire(timeout=0):
            return clean(folder, dry_run=dry_run)
    except Timeout:
        return []


def _remove_partials(snapshot: Path, *, dry_run: bool) -> list[Path]:
    """The ``.partial-*`` files under ``snapshot`` (a download's copies not yet checked)."""
    found = sorted(p for p in snapshot.rglob(f"{PARTIAL_PREFIX}*") if p.is_file())
    for path in found if not dry_run else ():
        path.unlink(missing_ok=True)
    return found
