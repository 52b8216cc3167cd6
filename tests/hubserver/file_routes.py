"""The test Hub server's file downloads (``resolve``): inline files, or a redirect for LFS ones."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from .access import hub_of
from .errors import HubError
from .lfs import lfs_redirect

router = APIRouter()


@router.api_route("/spaces/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
async def resolve_space(request: Request, ns: str, name: str, revision: str, path: str):
    return _resolve(request, "spaces", f"{ns}/{name}", revision, path)


@router.api_route("/datasets/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
async def resolve_dataset(request: Request, ns: str, name: str, revision: str, path: str):
    return _resolve(request, "datasets", f"{ns}/{name}", revision, path)


@router.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
async def resolve(request: Request, ns: str, name: str, revision: str, path: str):
    return _resolve(request, "models", f"{ns}/{name}", revision, path)


def _resolve(request: Request, kind: str, repo_id: str, revision: str, path: str):
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, repo_id)
    with hub.storage.lock:
        commit = hub.commit_for(repo, revision)
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        file_path = hub.storage.blob_path(entry)
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
