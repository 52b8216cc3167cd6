"""LocalHub: a folder laid out like a bare Hub, the embedded default store.

    root/models/<org>/<name>/repo.json            private flag, creation time
                             objects/<sha256>      file contents, content-addressed
                             commits/<sha>.json    parent, message, time, {path: {sha256, size}}
                             refs/heads/main       commit sha of the branch
                             refs/tags/<alias>     commit sha an alias points at
    root/spaces/<org>/<name>/...                   the same, for Space repos

Revisions are immutable: a commit's sha is the sha1 of its JSON, and its files are blobs
named by their sha256, so nothing a commit points at can change without the change being
seen (``snapshot_download`` re-hashes every file it copies). Every write goes to a temporary
file first, is fsynced and lands with ``os.replace``; blobs are on disk before the commit that
names them, and the commit before the ref. A lock per repo serialises writers (publishes and
alias moves); the next writer removes what a killed one left (``.incoming-*`` blobs, temporary
refs), as does ``clean_leftovers`` (``loradock registry gc``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from loradock.errors import (
    AdapterNotFoundError,
    CardError,
    IntegrityError,
    InvalidNameError,
    RevisionNotFoundError,
    StoreError,
)
from loradock.registry.card_yaml import MAX_CARD_BYTES, load_yaml
from loradock.registry.local_files import (
    copy_to_temp,
    disk_errors,
    fsync_dir,
    read_refs,
    remove_hidden_files,
    safe_relpath,
    walk_files,
    write_atomic,
)
from loradock.registry.names import (
    DEFAULT_REVISION,
    is_sha,
    validate_repo_id,
    validate_revision,
)
from loradock.registry.store import CommitInfo, RepoFile, RepoInfo, RepoRefs, RepoType

_REPO_FOLDERS: dict[str, str] = {"model": "models", "space": "spaces"}

logger = logging.getLogger(__name__)


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
            for sub in ("objects", "commits", "refs/heads", "refs/tags"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            now = _now()
            # Like the Hub, a new repo starts with one empty commit, so `main` always exists.
            sha = self._write_commit(folder, None, "initial commit", {}, now)
            write_atomic(folder / "refs" / "heads" / DEFAULT_REVISION, sha)
            info = {"repo_id": repo_id, "private": bool(private), "created_at": now}
            write_atomic(folder / "repo.json", json.dumps(info))
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
            self._clean(repo)
            branch = repo / "refs" / "heads" / revision
            if not branch.is_file():
                raise RevisionNotFoundError(
                    f"Branch {revision!r} does not exist in {repo_id!r}; upload to 'main'."
                )
            parent = branch.read_text().strip()
            files = dict(self._read_commit(repo, repo_id, parent)["files"])
            changed = False
            for path in walk_files(source):
                entry = self._store_blob(repo, source / path)
                if files.get(path) != entry:
                    files[path] = entry
                    changed = True
            if not changed:
                commit = self._read_commit(repo, repo_id, parent)
                return CommitInfo(repo_id, parent, commit["message"], _dt(commit["created_at"]))
            fsync_dir(repo / "objects")
            now = _now()
            sha = self._write_commit(repo, parent, commit_message, files, now)
            write_atomic(branch, sha)
        return CommitInfo(repo_id, sha, commit_message, _dt(now))

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

    def repo_info(self, repo_id: str, *, revision: str | None = None) -> RepoInfo:
        repo = self._existing_repo_dir(repo_id, "model")
        sha = self._resolve(repo, repo_id, revision or DEFAULT_REVISION)
        commit = self._read_commit(repo, repo_id, sha)
        meta = json.loads((repo / "repo.json").read_text())
        card_data = self._card_data(repo, commit["files"])
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
            created_at=_dt(meta.get("created_at")),
            last_modified=_dt(commit["created_at"]),
        )

    # -- refs and history ----------------------------------------------------------------

    def list_refs(self, repo_id: str) -> RepoRefs:
        repo = self._existing_repo_dir(repo_id, "model")
        return RepoRefs(
            branches=read_refs(repo / "refs" / "heads"), tags=read_refs(repo / "refs" / "tags")
        )

    def list_commits(self, repo_id: str, *, revision: str = DEFAULT_REVISION) -> list[CommitInfo]:
        """History from ``revision`` back to the first commit, newest first."""
        repo = self._existing_repo_dir(repo_id, "model")
        sha: str | None = self._resolve(repo, repo_id, revision)
        out = []
        while sha:
            commit = self._read_commit(repo, repo_id, sha)
            out.append(CommitInfo(repo_id, sha, commit["message"], _dt(commit["created_at"])))
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
            self._clean(repo)
            sha = self._resolve(repo, repo_id, revision)
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

    def clean_leftovers(self, *, dry_run: bool = False) -> list[Path]:
        """Remove what killed writers left in every repo (each under its repo's lock);
        ``dry_run`` only lists it."""
        removed: list[Path] = []
        for kind in _REPO_FOLDERS.values():
            base = self.root / kind
            for repo in sorted(base.glob("*/*")) if base.is_dir() else []:
                if repo.is_dir() and (repo / "repo.json").is_file():
                    with self._lock(repo):
                        removed += self._clean(repo, dry_run=dry_run)
        return removed

    # -- downloads -----------------------------------------------------------------------

    def snapshot_download(
        self,
        repo_id: str,
        *,
        revision: str,
        local_dir: str | Path | None = None,
        files: Sequence[str] | None = None,
    ) -> Path:
        """Copy ``revision``'s files (only those named in ``files``, when given) into
        ``local_dir`` (default: ``root/.snapshots/...``), re-hashing each one; a blob that no
        longer matches its sha256 raises IntegrityError."""
        repo = self._existing_repo_dir(repo_id, "model")
        sha = self._resolve(repo, repo_id, revision)
        tree = self._read_commit(repo, repo_id, sha)["files"]
        wanted = tree if files is None else {p: tree[p] for p in files if p in tree}
        target = Path(local_dir) if local_dir else self.root / ".snapshots" / repo_id / sha
        with disk_errors(repo_id):
            self._copy_out(repo, repo_id, sha, wanted, target)
        return target

    def _copy_out(self, repo: Path, repo_id: str, sha: str, wanted: dict, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for path, entry in wanted.items():
            dest = target / safe_relpath(path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = repo / "objects" / entry["sha256"]
            if not blob.is_file():
                raise IntegrityError(
                    f"{repo_id}@{sha}: the contents of {path!r} are missing from the hub folder; "
                    "restore it from a backup or republish."
                )
            tmp, digest, _ = copy_to_temp(blob, dest.parent, prefix=".partial-")
            if digest != entry["sha256"]:
                tmp.unlink()  # the corrupt copy never lands under the file's name
                raise IntegrityError(
                    f"{repo_id}@{sha}: {path!r} is corrupt (sha256 {digest}, "
                    f"expected {entry['sha256']}). Restore it from a backup or republish."
                )
            os.replace(tmp, dest)

    # -- internals -----------------------------------------------------------------------

    def _url(self, repo_id: str, repo_type: RepoType) -> str:
        return f"{self.root.as_uri()}/{_REPO_FOLDERS[repo_type]}/{repo_id}"

    def _repo_dir(self, repo_id: str, repo_type: RepoType) -> Path:
        validate_repo_id(repo_id)
        if repo_type not in _REPO_FOLDERS:
            raise InvalidNameError(f"Invalid repo_type {repo_type!r}: use 'model' or 'space'.")
        folder = (self.root / _REPO_FOLDERS[repo_type] / repo_id).resolve()
        if not folder.is_relative_to(self.root):  # defence in depth after validate_repo_id
            raise InvalidNameError(f"Invalid repo id {repo_id!r}: it leaves the hub folder.")
        return folder

    def _existing_repo_dir(self, repo_id: str, repo_type: RepoType) -> Path:
        folder = self._repo_dir(repo_id, repo_type)
        if not (folder / "repo.json").is_file():
            # The message may reach an API user: it names the repo, never the hub's folder.
            raise AdapterNotFoundError(
                f"Repo {repo_id!r} not found in the local hub: check the name, or publish it first."
            )
        return folder

    def _clean(self, repo: Path, *, dry_run: bool = False) -> list[Path]:
        # Called with the repo's lock held: no live writer has a temporary file here.
        removed = remove_hidden_files(repo, dry_run=dry_run)
        for sub in ("objects", "commits", "refs/heads", "refs/tags"):
            removed += remove_hidden_files(repo / sub, dry_run=dry_run)
        return removed

    def _lock(self, folder: Path) -> FileLock:
        folder.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder) + ".lock", timeout=120)

    def _resolve(self, repo: Path, repo_id: str, revision: str) -> str:
        validate_revision(revision)
        if is_sha(revision):
            if (repo / "commits" / f"{revision}.json").is_file():
                return revision
            raise RevisionNotFoundError(f"Revision {revision!r} not found in {repo_id!r}.")
        for kind in ("heads", "tags"):
            ref = repo / "refs" / kind / revision
            if ref.is_file():
                return ref.read_text().strip()
        raise RevisionNotFoundError(
            f"Revision {revision!r} not found in {repo_id!r} (no such branch or tag)."
        )

    def _read_commit(self, repo: Path, repo_id: str, sha: str) -> dict[str, Any]:
        path = repo / "commits" / f"{sha}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RevisionNotFoundError(f"Commit {sha!r} not found in {repo_id!r}.") from None
        if hashlib.sha1(raw).hexdigest() != sha:
            logger.error("Altered commit file in the local hub: %s", path)  # for the operator
            raise IntegrityError(
                f"{repo_id!r}: commit {sha!r} was altered on disk; restore the hub folder "
                "from a backup or republish the repo."
            )
        return json.loads(raw)

    def _write_commit(
        self, repo: Path, parent: str | None, message: str, files: dict, created_at: str
    ) -> str:
        body = {"parent": parent, "message": message, "created_at": created_at, "files": files}
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        sha = hashlib.sha1(raw).hexdigest()
        path = repo / "commits" / f"{sha}.json"
        if not path.exists():
            write_atomic(path, raw)
        return sha

    def _store_blob(self, repo: Path, source: Path) -> dict[str, Any]:
        objects = repo / "objects"
        tmp, digest, size = copy_to_temp(source, objects, prefix=".incoming-")
        dest = objects / digest
        try:
            if dest.exists():
                tmp.unlink()
            else:
                os.chmod(tmp, 0o444)  # blobs are immutable
                os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return {"sha256": digest, "size": size}

    def _card_data(self, repo: Path, files: dict) -> dict[str, Any]:
        entry = files.get("README.md")
        if not entry or entry["size"] > MAX_CARD_BYTES:
            return {}  # an oversized card is not read at all (resolve refuses it by name)
        text = (repo / "objects" / entry["sha256"]).read_text(encoding="utf-8", errors="replace")
        if not text.startswith("---"):
            return {}
        block = text[3:].split("\n---", 1)[0]
        try:
            data = load_yaml(block)
        except (yaml.YAMLError, CardError):
            return {}  # a broken card still lists (the Hub does the same); the index reports it
        return data if isinstance(data, dict) else {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
