"""The Hub HTTP API, as much of it as huggingface_hub's ``HfApi`` uses for loradock.

Answers like huggingface.co does where the client looks: error codes in ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), 401 for anonymous access to
private or missing repos, ``Link: <...>; rel="next"`` pagination, ``X-Repo-Commit`` and
``ETag`` on resolve. Large and binary files go through Git LFS as on the Hub (``lfs.py``),
the others inline (base64) in the NDJSON commit; no Xet (never sends ``X-Xet-Hash``).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .errors import INVALID_CREDENTIALS, HubError, safe_path
from .lfs import add_lfs_routes, lfs_redirect, upload_mode
from .storage import Commit, HubStorage, Repo, card_yaml_problem, hub_tags

KINDS = {"models": "model", "spaces": "space", "datasets": "dataset"}


def _remote_oid(entry: dict[str, Any] | None) -> str | None:
    """What preupload reports for a path: the sha256 of an LFS file, else the git blob id."""
    if entry is None:
        return None
    return entry["sha256"] if entry.get("lfs") else entry["blobId"]


def create_app(storage: HubStorage, tokens: dict[str, str], *, page_size: int = 1000) -> FastAPI:
    """``tokens`` maps a token to ``"write"`` or ``"read"``; anonymous callers read public repos."""
    app = FastAPI()
    # (method, path) of every request, so tests can check which endpoints the client used.
    app.state.requests = []

    @app.middleware("http")
    async def _record(request: Request, call_next):
        app.state.requests.append((request.method, request.url.path))
        return await call_next(request)

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        if request.method == "HEAD":
            return Response(status_code=exc.status, headers=headers)
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    def role(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        token = header.removeprefix("Bearer ").strip()
        if token not in tokens:
            raise HubError(401, INVALID_CREDENTIALS)
        return tokens[token]

    def repo_for(request: Request, kind: str, repo_id: str, *, write: bool = False) -> Repo:
        repo_type = KINDS.get(kind)
        if repo_type is None:
            raise HubError(404, f"Unknown repo kind {kind!r}")
        who = role(request)
        repo = storage.get(repo_type, repo_id)
        if repo is None or (repo.private and who is None):
            # Like the Hub: anonymous callers cannot tell "private" from "missing".
            status = 401 if who is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        if write and who is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        if write and who != "write":
            raise HubError(403, f"Your token cannot write to {repo_id}: it is read-only")
        return repo

    def commit_for(repo: Repo, revision: str | None) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def siblings(commit: Commit, *, sizes: bool) -> list[dict[str, Any]]:
        out = []
        for path in sorted(commit.tree):
            item: dict[str, Any] = {"rfilename": path}
            entry = commit.tree[path]
            if sizes:
                item.update(size=entry["size"], blobId=entry["blobId"])
                if entry.get("lfs"):
                    lfs = {"size": entry["size"], "pointerSize": entry["pointerSize"]}
                    item["lfs"] = {"sha256": entry["sha256"], **lfs}
            out.append(item)
        return out

    def info(repo: Repo, commit: Commit, *, fields: list[str] | None, blobs: bool) -> dict:
        card = storage.card_data(commit)
        full: dict[str, Any] = {
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.id,
            "private": repo.private,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "tags": hub_tags(card),
            "cardData": card,
            "siblings": siblings(commit, sizes=blobs),
            "library_name": (card or {}).get("library_name"),
            "pipeline_tag": (card or {}).get("pipeline_tag"),
            "downloads": 0,
            "likes": 0,
        }
        if repo.sdk:
            full["sdk"] = repo.sdk
        if fields is not None:
            return {k: v for k, v in full.items() if k == "id" or k in fields}
        return full

    def expand_params(request: Request) -> list[str] | None:
        values = request.query_params.getlist("expand") + request.query_params.getlist("expand[]")
        return values or None

    # ---------------------------------------------------------------- repos
    @app.post("/api/repos/create")
    async def create_repo(request: Request) -> Response:
        who = role(request)
        if who is None:
            raise HubError(401, "You must be authenticated to create a repo")
        if who != "write":
            raise HubError(403, "Your token is read-only: it cannot create repos")
        body = await request.json()
        name, org = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if not name or not org:
            raise HubError(400, "A repo needs a namespace: 'organization/name'")
        repo_id = f"{org}/{name}"
        private = body.get("private", body.get("visibility") == "private")
        repo = storage.create(repo_type, repo_id, private=bool(private), sdk=body.get("sdk"))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{str(request.base_url).rstrip('/')}/{prefix}{repo_id}"
        if repo is None:
            return JSONResponse({"error": "You already created this repo", "url": url}, 409)
        return JSONResponse({"url": url, "name": repo_id})

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request) -> Response:
        content = (await request.json()).get("content", "")
        problem = card_yaml_problem(content)
        if problem:
            return JSONResponse({"errors": [{"message": problem}], "warnings": []}, 400)
        return JSONResponse({"errors": [], "warnings": []})

    @app.get("/api/{kind}")
    async def list_repos(request: Request, kind: str) -> Response:
        repo_type = KINDS.get(kind)
        if repo_type is None:
            raise HubError(404, f"Unknown repo kind {kind!r}")
        who = role(request)
        q = request.query_params
        filters = q.getlist("filter")
        author, search = q.get("author"), (q.get("search") or "").lower()
        limit = min(int(q.get("limit") or page_size), page_size)
        offset = int(q.get("cursor") or 0)
        fields = expand_params(request)
        if fields is None and not q.get("full"):
            fields = ["author", "private", "tags", "createdAt", "library_name", "pipeline_tag"]
            if q.get("cardData"):
                fields.append("cardData")
        matches = []
        with storage.lock:
            repos = sorted(
                (r for (t, _), r in storage.repos.items() if t == repo_type),
                key=lambda r: r.repo_id,
            )
            for repo in repos:
                if repo.private and who is None:
                    continue
                if author and repo.repo_id.split("/")[0] != author:
                    continue
                if search and search not in repo.repo_id.lower():
                    continue
                tags = set(hub_tags(storage.card_data(repo.head)))
                if any(f not in tags for f in filters):
                    continue
                matches.append(info(repo, repo.head, fields=fields, blobs=False))
        page = matches[offset : offset + limit]
        headers = {}
        if offset + limit < len(matches):
            params = [(k, v) for k, v in q.multi_items() if k != "cursor"]
            params.append(("cursor", str(offset + limit)))
            url = f"{str(request.base_url).rstrip('/')}/api/{kind}?{urlencode(params)}"
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse(page, headers=headers)

    @app.get("/api/{kind}/{ns}/{name}")
    async def repo_info(request: Request, kind: str, ns: str, name: str) -> Response:
        return _repo_info(request, kind, f"{ns}/{name}", None)

    @app.get("/api/{kind}/{ns}/{name}/revision/{revision:path}")
    async def repo_info_at(request: Request, kind: str, ns: str, name: str, revision: str):
        return _repo_info(request, kind, f"{ns}/{name}", revision)

    def _repo_info(request: Request, kind: str, repo_id: str, revision: str | None) -> Response:
        repo = repo_for(request, kind, repo_id)
        with storage.lock:
            commit = commit_for(repo, revision)
            blobs = bool(request.query_params.get("blobs"))
            return JSONResponse(info(repo, commit, fields=expand_params(request), blobs=blobs))

    @app.get("/api/{kind}/{ns}/{name}/tree/{revision}")
    async def tree(request: Request, kind: str, ns: str, name: str, revision: str) -> Response:
        return _tree(request, kind, f"{ns}/{name}", revision, "")

    @app.get("/api/{kind}/{ns}/{name}/tree/{revision}/{folder:path}")
    async def tree_in(request: Request, kind: str, ns: str, name: str, revision: str, folder: str):
        return _tree(request, kind, f"{ns}/{name}", revision, folder)

    def _tree(request: Request, kind: str, repo_id: str, revision: str, folder: str) -> Response:
        repo = repo_for(request, kind, repo_id)
        recursive = request.query_params.get("recursive") in ("1", "true", "True")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        with storage.lock:
            commit = commit_for(repo, revision)
            entries: dict[str, dict[str, Any]] = {}
            for path, blob in sorted(commit.tree.items()):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix) :].split("/")
                for depth in range(1, len(rest)):
                    sub = prefix + "/".join(rest[:depth])
                    if recursive or depth == 1:
                        entries.setdefault(sub, {"type": "directory", "oid": "0" * 40, "path": sub})
                if recursive or len(rest) == 1:
                    entries[path] = {
                        "type": "file",
                        "oid": blob["blobId"],
                        "size": blob["size"],
                        "path": path,
                    }
                    if blob.get("lfs"):
                        lfs = {"size": blob["size"], "pointerSize": blob["pointerSize"]}
                        entries[path]["lfs"] = {"oid": blob["sha256"], **lfs}
        if prefix and not entries:
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        return JSONResponse(list(entries.values()))

    # ---------------------------------------------------------------- uploads
    @app.post("/api/{kind}/{ns}/{name}/preupload/{revision:path}")
    async def preupload(request: Request, kind: str, ns: str, name: str, revision: str):
        repo = repo_for(request, kind, f"{ns}/{name}", write=True)
        body = await request.json()
        with storage.lock:
            commit = repo.resolve(revision)
            tree = commit.tree if commit else {}
            files = [
                {
                    "path": f["path"],
                    "uploadMode": upload_mode(f),
                    "shouldIgnore": False,
                    "oid": _remote_oid(tree.get(f["path"])),
                }
                for f in body.get("files", [])
            ]
        return JSONResponse({"files": files, "commitOid": commit.id if commit else None})

    @app.post("/api/{kind}/{ns}/{name}/commit/{revision:path}")
    async def create_commit(request: Request, kind: str, ns: str, name: str, revision: str):
        repo = repo_for(request, kind, f"{ns}/{name}", write=True)
        header: dict[str, Any] = {}
        added: dict[str, bytes] = {}
        lfs_added: dict[str, tuple[str, int]] = {}
        deleted_files: list[str] = []
        deleted_folders: list[str] = []
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                added[safe_path(value["path"])] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value.get("algo") != "sha256":
                    raise HubError(400, f"Unsupported LFS algorithm {value.get('algo')!r}")
                lfs_added[safe_path(value["path"])] = (value["oid"], int(value["size"]))
            elif key == "deletedFile":
                deleted_files.append(safe_path(value["path"]))
            elif key == "deletedFolder":
                deleted_folders.append(safe_path(value["path"]))
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        if not header.get("summary"):
            raise HubError(400, "A commit needs a header line with a summary")
        try:
            commit = storage.commit(
                repo,
                branch=revision.removeprefix("refs/heads/"),
                title=header["summary"],
                message=header.get("description", ""),
                added=added,
                deleted_files=deleted_files,
                deleted_folders=deleted_folders,
                parent_commit=header.get("parentCommit"),
                lfs_added=lfs_added,
            )
        except LookupError as exc:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound") from exc
        except FileNotFoundError as exc:
            raise HubError(404, f"File to delete not found: {exc}", "EntryNotFound") from exc
        except ValueError as exc:
            status = 422 if "LFS" in str(exc) else 412
            raise HubError(status, str(exc)) from exc
        base = str(request.base_url).rstrip("/")
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return JSONResponse(
            {
                "success": True,
                "commitOid": commit.id,
                "commitUrl": f"{base}/{prefix}{repo.repo_id}/commit/{commit.id}",
            }
        )

    # ---------------------------------------------------------------- refs
    @app.get("/api/{kind}/{ns}/{name}/refs")
    async def refs(request: Request, kind: str, ns: str, name: str) -> Response:
        repo = repo_for(request, kind, f"{ns}/{name}")
        with storage.lock:
            return JSONResponse(
                {
                    "branches": [
                        {"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                        for b, sha in sorted(repo.branches.items())
                    ],
                    "tags": [
                        {"name": t, "ref": f"refs/tags/{t}", "targetCommit": sha}
                        for t, sha in sorted(repo.tags.items())
                    ],
                    "converts": [],
                    "pullRequests": [],
                }
            )

    @app.get("/api/{kind}/{ns}/{name}/commits/{revision:path}")
    async def commits(request: Request, kind: str, ns: str, name: str, revision: str):
        repo = repo_for(request, kind, f"{ns}/{name}")
        with storage.lock:
            history = repo.history(commit_for(repo, revision))
        items = [
            {
                "id": c.id,
                "title": c.title,
                "message": c.message,
                "date": c.date,
                "authors": [{"user": "system" if c.parent is None else "loradock"}],
            }
            for c in history
        ]
        return JSONResponse(items)

    @app.post("/api/{kind}/{ns}/{name}/tag/{revision:path}")
    async def create_tag(request: Request, kind: str, ns: str, name: str, revision: str):
        repo = repo_for(request, kind, f"{ns}/{name}", write=True)
        tag = (await request.json()).get("tag")
        if not tag:
            raise HubError(400, "A tag needs a name")
        with storage.lock:
            commit = commit_for(repo, revision)
            if tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Tag {tag!r} already exists")
            repo.tags[tag] = commit.id
        return JSONResponse({"tag": tag, "targetCommit": commit.id})

    @app.delete("/api/{kind}/{ns}/{name}/tag/{tag}")
    async def delete_tag(request: Request, kind: str, ns: str, name: str, tag: str):
        repo = repo_for(request, kind, f"{ns}/{name}", write=True)
        with storage.lock:
            if tag not in repo.tags:
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            del repo.tags[tag]
        return JSONResponse({"success": True})

    # ---------------------------------------------------------------- files
    @app.api_route("/spaces/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve_space(request: Request, ns: str, name: str, revision: str, path: str):
        return _resolve(request, "spaces", f"{ns}/{name}", revision, path)

    @app.api_route("/datasets/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve_dataset(request: Request, ns: str, name: str, revision: str, path: str):
        return _resolve(request, "datasets", f"{ns}/{name}", revision, path)

    @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve(request: Request, ns: str, name: str, revision: str, path: str):
        return _resolve(request, "models", f"{ns}/{name}", revision, path)

    def _resolve(request: Request, kind: str, repo_id: str, revision: str, path: str):
        repo = repo_for(request, kind, repo_id)
        with storage.lock:
            commit = commit_for(repo, revision)
            entry = commit.tree.get(path)
            if entry is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            file_path = storage.blob_path(entry)
        if entry.get("lfs"):
            linked = {
                "X-Repo-Commit": commit.id,
                "ETag": f'"{entry["blobId"]}"',
                "X-Linked-Etag": f'"{entry["sha256"]}"',
                "X-Linked-Size": str(entry["size"]),
            }
            return lfs_redirect(request, entry, linked)
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{entry["blobId"]}"',
            "Content-Length": str(entry["size"]),
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        response = FileResponse(file_path, headers=headers)
        return response

    add_lfs_routes(app, storage, repo_for)
    return app
