"""Git LFS as the Hub does it, for the test Hub server.

- ``preupload`` answers ``lfs`` for files the repo's ``.gitattributes`` sends to LFS
  (safetensors, bin, pt, gguf), for binary samples (a NUL byte) and for files of 10 MB or more;
- the batch API (``POST /<repo>.git/info/lfs/objects/batch``) answers an upload and a verify
  action per object it lacks, and no action for objects it holds (the client then skips them);
- uploads are ``PUT`` to a storage URL, checked against the oid (sha256);
- the commit names LFS files by ``lfsFile`` (oid, size);
- a download of an LFS file is a 302 to a "CDN" on another origin (``localhost`` instead of
  ``127.0.0.1``: huggingface_hub does not follow it on HEAD and drops the token on GET) with
  ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``; the repo info lists the file with
  ``lfs: {sha256, size, pointerSize}``, so a client can check the sha256 of what it downloaded.
"""

from __future__ import annotations

import base64
import fnmatch
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .errors import HubError
from .storage import HubStorage

LFS_PATTERNS = ("*.bin", "*.gguf", "*.pt", "*.safetensors")
LFS_MIN_BYTES = 10 * 1024 * 1024
LFS_MEDIA = "application/vnd.git-lfs+json"


def upload_mode(item: dict[str, Any]) -> str:
    """``lfs`` or ``regular`` for one file of a preupload request (path, size, sample)."""
    path, size = item.get("path", ""), int(item.get("size") or 0)
    if any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS):
        return "lfs"
    sample = base64.b64decode(item.get("sample") or "")
    return "lfs" if size >= LFS_MIN_BYTES or b"\0" in sample else "regular"


def cdn_base(request: Request) -> str:
    return str(request.base_url).rstrip("/").replace("://127.0.0.1", "://localhost")


def lfs_redirect(request: Request, entry: dict[str, Any], headers: dict[str, str]) -> Response:
    """The Hub's answer to ``resolve`` for an LFS file: a redirect to the storage host."""
    location = f"{cdn_base(request)}/lfs-cdn/{entry['sha256']}"
    return Response(status_code=302, headers={**headers, "Location": location})


def add_lfs_routes(app: FastAPI, storage: HubStorage, repo_for: Callable[..., Any]) -> None:
    """The batch, upload, verify and storage routes (``repo_for`` checks access as the app does)."""

    async def batch(request: Request, kind: str, repo_id: str) -> Response:
        repo_for(request, kind, repo_id, write=True)
        body = await request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        base, cdn = str(request.base_url).rstrip("/"), cdn_base(request)
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size}
            if not storage.has_blob(oid, size):
                answer["actions"] = {
                    "upload": {"href": f"{cdn}/lfs-upload/{oid}"},
                    "verify": {"href": f"{base}/lfs-verify/{oid}"},
                }
            objects.append(answer)
        return JSONResponse({"transfer": "basic", "objects": objects}, media_type=LFS_MEDIA)

    for kind, prefix in (("models", ""), ("datasets", "datasets/"), ("spaces", "spaces/")):

        async def route(request: Request, ns: str, name: str, _kind: str = kind) -> Response:
            return await batch(request, _kind, f"{ns}/{name}")

        app.add_api_route(
            f"/{prefix}{{ns}}/{{name}}.git/info/lfs/objects/batch", route, methods=["POST"]
        )

    @app.put("/lfs-upload/{oid}")
    async def upload(request: Request, oid: str) -> Response:
        try:
            storage.put_lfs(oid, await request.body())
        except ValueError as exc:
            raise HubError(400, str(exc)) from exc
        return Response(status_code=200)

    @app.post("/lfs-verify/{oid}")
    async def verify(request: Request, oid: str) -> Response:
        size = (await request.json()).get("size")
        if not storage.has_blob(oid, size):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        return JSONResponse({"success": True})

    @app.api_route("/lfs-cdn/{oid}", methods=["GET", "HEAD"])
    async def cdn(request: Request, oid: str) -> Response:
        if not storage.has_blob(oid):
            raise HubError(404, f"LFS object {oid} not found")
        path = storage.blob_path({"sha256": oid})
        if request.method == "HEAD":
            return Response(status_code=200, headers={"Content-Length": str(path.stat().st_size)})
        return FileResponse(path)
