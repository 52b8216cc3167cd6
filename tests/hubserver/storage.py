"""Git-like repo storage for the test Hub server: content-addressed blobs, commits, refs.

Kept deliberately small but honest: every commit is an immutable snapshot (a tree of
path -> blob) with a 40-hex id and a parent, ``main`` is a moving branch, tags point at
commits, and a new repo starts with the Hub's own "initial commit" holding ``.gitattributes``.
One lock guards everything: the server's worker threads see a consistent store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

# What the Hub writes into every new repo: LFS rules for the usual binary extensions.
GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.gguf filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``blobId``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The pointer file git stores for an LFS object (its blob id is the entry's ``blobId``)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def lfs_entry(oid: str, size: int) -> dict[str, Any]:
    pointer = lfs_pointer(oid, size)
    return {
        "sha256": oid,
        "blobId": git_blob_id(pointer),
        "size": size,
        "lfs": True,
        "pointerSize": len(pointer),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Commit:
    id: str
    parent: str | None
    title: str
    message: str
    date: str
    tree: dict[str, dict[str, Any]]  # path -> {"sha256", "blobId", "size"}

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    sdk: str | None = None

    @property
    def head(self) -> Commit:
        return self.commits[self.branches["main"]]

    def resolve(self, revision: str | None) -> Commit | None:
        """A branch, a tag or a full commit id, like the Hub (no short shas)."""
        rev = revision or "main"
        for prefix in ("refs/heads/", "refs/tags/"):
            rev = rev.removeprefix(prefix)
        sha = self.branches.get(rev) or self.tags.get(rev) or rev
        return self.commits.get(sha)

    def history(self, start: Commit) -> list[Commit]:
        out, cur = [], start
        while cur is not None:
            out.append(cur)
            cur = self.commits.get(cur.parent) if cur.parent else None
        return out


class HubStorage:
    """Repos on disk under ``root``: ``blobs/<sha256>`` plus one JSON document per repo."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            shutil.rmtree(self.root / "blobs", ignore_errors=True)
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)

    # --- blobs -------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> dict[str, Any]:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / sha256
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return {"sha256": sha256, "blobId": git_blob_id(data), "size": len(data)}

    def put_lfs(self, oid: str, data: bytes) -> None:
        """Store an LFS object under its sha256; ``ValueError`` if the bytes do not hash to it."""
        if hashlib.sha256(data).hexdigest() != oid:
            raise ValueError(f"LFS object does not match its oid {oid}")
        self.put_blob(data)

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.root / "blobs" / sha256
        return path.is_file() and (size is None or path.stat().st_size == size)

    def blob_path(self, entry: dict[str, Any]) -> Path:
        return self.root / "blobs" / entry["sha256"]

    def read_blob(self, entry: dict[str, Any]) -> bytes:
        return self.blob_path(entry).read_bytes()

    # --- repos -------------------------------------------------------------------------
    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def create(
        self, repo_type: str, repo_id: str, *, private: bool, sdk: str | None = None
    ) -> Repo | None:
        """Create the repo with its initial commit; ``None`` if it already exists."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return None
            repo = Repo(repo_type, repo_id, private, now_iso(), sdk=sdk)
            self.repos[(repo_type, repo_id)] = repo
            tree = {".gitattributes": self.put_blob(GITATTRIBUTES)}
            self._add_commit(repo, "main", None, "initial commit", "", tree)
            return repo

    def _add_commit(
        self,
        repo: Repo,
        branch: str,
        parent: str | None,
        title: str,
        message: str,
        tree: dict[str, dict[str, Any]],
    ) -> Commit:
        date = now_iso()
        seed = json.dumps([repo.repo_id, parent, title, message, date, tree, time.time_ns()])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(sha, parent, title, message, date, tree)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit

    def commit(
        self,
        repo: Repo,
        *,
        branch: str,
        title: str,
        message: str,
        added: dict[str, bytes],
        deleted_files: list[str],
        deleted_folders: list[str],
        parent_commit: str | None = None,
        lfs_added: dict[str, tuple[str, int]] | None = None,
    ) -> Commit:
        """Apply one commit on ``branch``; raises ``LookupError``/``ValueError`` for bad input.
        ``lfs_added`` maps a path to ``(sha256, size)`` of an LFS object uploaded before."""
        with self.lock:
            if branch not in repo.branches:
                raise LookupError(f"branch {branch!r} not found")
            head = repo.commits[repo.branches[branch]]
            if parent_commit is not None and parent_commit != head.id:
                raise ValueError(
                    f"parent commit {parent_commit} is not the head of {branch} ({head.id})"
                )
            tree = dict(head.tree)
            for path in deleted_files:
                if path not in tree:
                    raise FileNotFoundError(path)
                del tree[path]
            for folder in deleted_folders:
                prefix = folder.rstrip("/") + "/"
                for path in [p for p in tree if p.startswith(prefix)]:
                    del tree[path]
            for path, data in added.items():
                tree[path] = self.put_blob(data)
            for path, (oid, size) in (lfs_added or {}).items():
                if not self.has_blob(oid, size):
                    raise ValueError(
                        f"LFS object {oid} ({size} bytes) of {path} was never uploaded"
                    )
                tree[path] = lfs_entry(oid, size)
            return self._add_commit(repo, branch, head.id, title, message, tree)

    def card_data(self, commit: Commit) -> dict[str, Any] | None:
        """The README's YAML header, as the Hub parses it (``None`` without one)."""
        entry = commit.tree.get("README.md")
        if entry is None:
            return None
        try:
            return parse_card_yaml(self.read_blob(entry).decode("utf-8", errors="replace"))
        except ValueError:
            return None


def parse_card_yaml(text: str) -> dict[str, Any] | None:
    """The YAML block between the leading ``---`` lines; ``ValueError`` if it is malformed."""
    if not text.startswith("---"):
        return None
    parts = text.split("\n---", 1)
    if len(parts) < 2:
        raise ValueError("the YAML header starts with '---' but never ends")
    try:
        data = yaml.safe_load(parts[0].removeprefix("---"))
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ValueError("the YAML header is not a mapping")
    return data


def card_yaml_problem(text: str) -> str | None:
    """What the Hub's YAML validation would refuse in a README, or ``None``."""
    try:
        parse_card_yaml(text)
    except ValueError as exc:
        return str(exc)
    return None


def hub_tags(card: dict[str, Any] | None) -> list[str]:
    """The tags the Hub derives from a card, in its spelling (``base_model:adapter:<id>``)."""
    if not card:
        return []
    tags: list[str] = []

    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    tags += as_list(card.get("tags"))
    tags += as_list(card.get("library_name"))
    tags += as_list(card.get("pipeline_tag"))
    tags += [f"dataset:{d}" for d in as_list(card.get("datasets"))]
    tags += [f"license:{lic}" for lic in as_list(card.get("license"))]
    relation = card.get("base_model_relation")
    for base in as_list(card.get("base_model")):
        tags.append(f"base_model:{base}")
        if relation:
            tags.append(f"base_model:{relation}:{base}")
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag, None)
    return list(seen)
