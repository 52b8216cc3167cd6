"""One repo folder of the local hub: its commits, blobs and refs (``LocalHub`` holds the API).

Every function takes the repo's folder; the writers (``init_repo``, ``commit_folder``,
``clean``) expect the caller to hold the repo's lock. A commit's sha is the sha1 of its JSON
and its files are blobs named by their sha256; blobs are fsynced before the commit that names
them, and the commit before the ref, so a killed writer leaves dot-files but never a revision
pointing at something missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from loradock.errors import CardError, IntegrityError, RevisionNotFoundError
from loradock.registry.card_yaml import MAX_CARD_BYTES, load_yaml
from loradock.registry.local_files import (
    copy_to_temp,
    fsync_dir,
    remove_hidden_files,
    safe_relpath,
    walk_files,
    write_atomic,
)
from loradock.registry.names import DEFAULT_REVISION, is_sha, validate_revision
from loradock.registry.store import CommitInfo

_SUBFOLDERS = ("objects", "commits", "refs/heads", "refs/tags")
# A file copied out of the hub is written under this prefix until its hash is checked.
PARTIAL_PREFIX = ".partial-"

logger = logging.getLogger(__name__)


def init_repo(folder: Path, repo_id: str, *, private: bool) -> None:
    """Lay out an empty repo whose ``main`` holds one empty commit (as on the Hub)."""
    for sub in _SUBFOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    now = now_iso()
    sha = write_commit(folder, None, "initial commit", {}, now)
    write_atomic(folder / "refs" / "heads" / DEFAULT_REVISION, sha)
    info = {"repo_id": repo_id, "private": bool(private), "created_at": now}
    write_atomic(folder / "repo.json", json.dumps(info))  # last: the repo exists from here


def commit_folder(
    repo: Path, repo_id: str, source: Path, *, revision: str, message: str
) -> CommitInfo:
    """Commit every file under ``source`` onto the branch ``revision``; files the parent
    already holds with the same content cost nothing, and nothing changed makes no commit."""
    branch = repo / "refs" / "heads" / revision
    if not branch.is_file():
        raise RevisionNotFoundError(
            f"Branch {revision!r} does not exist in {repo_id!r}; upload to 'main'."
        )
    parent = branch.read_text().strip()
    files = dict(read_commit(repo, repo_id, parent)["files"])
    changed = False
    for path in walk_files(source):
        entry = store_blob(repo, source / path)
        if files.get(path) != entry:
            files[path] = entry
            changed = True
    if not changed:
        commit = read_commit(repo, repo_id, parent)
        return CommitInfo(repo_id, parent, commit["message"], parse_time(commit["created_at"]))
    fsync_dir(repo / "objects")
    now = now_iso()
    sha = write_commit(repo, parent, message, files, now)
    write_atomic(branch, sha)
    return CommitInfo(repo_id, sha, message, parse_time(now))


def resolve(repo: Path, repo_id: str, revision: str) -> str:
    """The commit sha ``revision`` (a sha, a branch or a tag) names."""
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


def read_commit(repo: Path, repo_id: str, sha: str) -> dict[str, Any]:
    """A commit's JSON, checked against its sha (an edited commit file is IntegrityError)."""
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


def write_commit(repo: Path, parent: str | None, message: str, files: dict, created_at: str) -> str:
    """Write a commit (``files``: ``{path: {sha256, size}}``) and return its sha."""
    body = {"parent": parent, "message": message, "created_at": created_at, "files": files}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    sha = hashlib.sha1(raw).hexdigest()
    path = repo / "commits" / f"{sha}.json"
    if not path.exists():
        write_atomic(path, raw)
    return sha


def store_blob(repo: Path, source: Path) -> dict[str, Any]:
    """Copy ``source`` into the repo's objects under its sha256 (once per content)."""
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


def copy_out(repo: Path, repo_id: str, sha: str, wanted: dict, target: Path) -> None:
    """Copy the blobs of ``wanted`` (``{path: entry}``) under ``target``, re-hashing each:
    a file lands under its name (from a ``.partial-*`` copy) only once its sha256 matches."""
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
        tmp, digest, _ = copy_to_temp(blob, dest.parent, prefix=PARTIAL_PREFIX)
        if digest != entry["sha256"]:
            tmp.unlink()  # the corrupt copy never lands under the file's name
            raise IntegrityError(
                f"{repo_id}@{sha}: {path!r} is corrupt (sha256 {digest}, "
                f"expected {entry['sha256']}). Restore it from a backup or republish."
            )
        os.replace(tmp, dest)


def clean(repo: Path, *, dry_run: bool = False) -> list[Path]:
    """Remove the temporary files killed writers left in ``repo`` (its lock held: no live
    writer has one here); ``dry_run`` only lists them."""
    removed = remove_hidden_files(repo, dry_run=dry_run)
    for sub in _SUBFOLDERS:
        removed += remove_hidden_files(repo / sub, dry_run=dry_run)
    return removed


def card_data(repo: Path, files: dict) -> dict[str, Any]:
    """The YAML block of the commit's README.md, or ``{}`` (none, oversized, or broken)."""
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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
