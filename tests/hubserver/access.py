"""Who may read or write what on the test Hub server, answered as the Hub answers.

Tokens map to ``"write"`` or ``"read"``; anonymous callers read public repos. The app keeps one
:class:`HubAccess` in its state; every route reaches it through :func:`hub_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from .errors import INVALID_CREDENTIALS, HubError
from .storage import Commit, HubStorage, Repo

KINDS = {"models": "model", "spaces": "space", "datasets": "dataset"}


@dataclass
class HubAccess:
    """The server's storage, its tokens and its page size, with the checks every route makes."""

    storage: HubStorage
    tokens: dict[str, str]
    page_size: int = 1000

    def role(self, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        token = header.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, INVALID_CREDENTIALS)
        return self.tokens[token]

    def repo_for(self, request: Request, kind: str, repo_id: str, *, write: bool = False) -> Repo:
        repo_type = KINDS.get(kind)
        if repo_type is None:
            raise HubError(404, f"Unknown repo kind {kind!r}")
        who = self.role(request)
        repo = self.storage.get(repo_type, repo_id)
        if repo is None or (repo.private and who is None):
            # Like the Hub: anonymous callers cannot tell "private" from "missing".
            status = 401 if who is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        if write and who is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        if write and who != "write":
            raise HubError(403, f"Your token cannot write to {repo_id}: it is read-only")
        return repo

    @staticmethod
    def commit_for(repo: Repo, revision: str | None) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit


def hub_of(request: Request) -> HubAccess:
    """The :class:`HubAccess` of the app answering ``request``."""
    return request.app.state.hub
