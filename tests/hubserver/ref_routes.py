"""The test Hub server's ref routes: branches and tags, a revision's history, tags made and removed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .access import hub_of
from .errors import HubError

router = APIRouter()


@router.get("/api/{kind}/{ns}/{name}/refs")
async def refs(request: Request, kind: str, ns: str, name: str) -> Response:
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, f"{ns}/{name}")
    with hub.storage.lock:
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


@router.get("/api/{kind}/{ns}/{name}/commits/{revision:path}")
async def commits(request: Request, kind: str, ns: str, name: str, revision: str):
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, f"{ns}/{name}")
    with hub.storage.lock:
        history = repo.history(hub.commit_for(repo, revision))
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


@router.post("/api/{kind}/{ns}/{name}/tag/{revision:path}")
async def create_tag(request: Request, kind: str, ns: str, name: str, revision: str):
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, f"{ns}/{name}", write=True)
    tag = (await request.json()).get("tag")
    if not tag:
        raise HubError(400, "A tag needs a name")
    with hub.storage.lock:
        commit = hub.commit_for(repo, revision)
        if tag in repo.tags or tag in repo.branches:
            raise HubError(409, f"Tag {tag!r} already exists")
        repo.tags[tag] = commit.id
    return JSONResponse({"tag": tag, "targetCommit": commit.id})


@router.delete("/api/{kind}/{ns}/{name}/tag/{tag}")
async def delete_tag(request: Request, kind: str, ns: str, name: str, tag: str):
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, f"{ns}/{name}", write=True)
    with hub.storage.lock:
        if tag not in repo.tags:
            raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        del repo.tags[tag]
    return JSONResponse({"success": True})
