"""The test Hub server's repo routes: create, validate a card's YAML, list, info and tree."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .access import KINDS, hub_of
from .errors import HubError
from .storage import Commit, HubStorage, Repo, card_yaml_problem, hub_tags

router = APIRouter()


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


def info(
    storage: HubStorage, repo: Repo, commit: Commit, *, fields: list[str] | None, blobs: bool
) -> dict:
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


@router.post("/api/repos/create")
async def create_repo(request: Request) -> Response:
    hub = hub_of(request)
    who = hub.role(request)
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
    repo = hub.storage.create(repo_type, repo_id, private=bool(private), sdk=body.get("sdk"))
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    url = f"{str(request.base_url).rstrip('/')}/{prefix}{repo_id}"
    if repo is None:
        return JSONResponse({"error": "You already created this repo", "url": url}, 409)
    return JSONResponse({"url": url, "name": repo_id})


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> Response:
    content = (await request.json()).get("content", "")
    problem = card_yaml_problem(content)
    if problem:
        return JSONResponse({"errors": [{"message": problem}], "warnings": []}, 400)
    return JSONResponse({"errors": [], "warnings": []})


@router.get("/api/{kind}")
async def list_repos(request: Request, kind: str) -> Response:
    hub = hub_of(request)
    repo_type = KINDS.get(kind)
    if repo_type is None:
        raise HubError(404, f"Unknown repo kind {kind!r}")
    who = hub.role(request)
    q = request.query_params
    filters = q.getlist("filter")
    author, search = q.get("author"), (q.get("search") or "").lower()
    limit = min(int(q.get("limit") or hub.page_size), hub.page_size)
    offset = int(q.get("cursor") or 0)
    fields = expand_params(request)
    if fields is None and not q.get("full"):
        fields = ["author", "private", "tags", "createdAt", "library_name", "pipeline_tag"]
        if q.get("cardData"):
            fields.append("cardData")
    matches = []
    with hub.storage.lock:
        repos = sorted(
            (r for (t, _), r in hub.storage.repos.items() if t == repo_type),
            key=lambda r: r.repo_id,
        )
        for repo in repos:
            if repo.private and who is None:
                continue
            if author and repo.repo_id.split("/")[0] != author:
                continue
            if search and search not in repo.repo_id.lower():
                continue
            tags = set(hub_tags(hub.storage.card_data(repo.head)))
            if any(f not in tags for f in filters):
                continue
            matches.append(info(hub.storage, repo, repo.head, fields=fields, blobs=False))
    page = matches[offset : offset + limit]
    headers = {}
    if offset + limit < len(matches):
        params = [(k, v) for k, v in q.multi_items() if k != "cursor"]
        params.append(("cursor", str(offset + limit)))
        url = f"{str(request.base_url).rstrip('/')}/api/{kind}?{urlencode(params)}"
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse(page, headers=headers)


@router.get("/api/{kind}/{ns}/{name}")
async def repo_info(request: Request, kind: str, ns: str, name: str) -> Response:
    return _repo_info(request, kind, f"{ns}/{name}", None)


@router.get("/api/{kind}/{ns}/{name}/revision/{revision:path}")
async def repo_info_at(request: Request, kind: str, ns: str, name: str, revision: str):
    return _repo_info(request, kind, f"{ns}/{name}", revision)


def _repo_info(request: Request, kind: str, repo_id: str, revision: str | None) -> Response:
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, repo_id)
    with hub.storage.lock:
        commit = hub.commit_for(repo, revision)
        blobs = bool(request.query_params.get("blobs"))
        return JSONResponse(
            info(hub.storage, repo, commit, fields=expand_params(request), blobs=blobs)
        )


@router.get("/api/{kind}/{ns}/{name}/tree/{revision}")
async def tree(request: Request, kind: str, ns: str, name: str, revision: str) -> Response:
    return _tree(request, kind, f"{ns}/{name}", revision, "")


@router.get("/api/{kind}/{ns}/{name}/tree/{revision}/{folder:path}")
async def tree_in(request: Request, kind: str, ns: str, name: str, revision: str, folder: str):
    return _tree(request, kind, f"{ns}/{name}", revision, folder)


def _tree(request: Request, kind: str, repo_id: str, revision: str, folder: str) -> Response:
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, repo_id)
    recursive = request.query_params.get("recursive") in ("1", "true", "True")
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    with hub.storage.lock:
        commit = hub.commit_for(repo, revision)
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
