"""The test Hub server's upload routes: preupload (regular or LFS per file) and the NDJSON commit."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .access import hub_of
from .errors import HubError, safe_path
from .lfs import upload_mode

router = APIRouter()


def _remote_oid(entry: dict[str, Any] | None) -> str | None:
    """What preupload reports for a path: the sha256 of an LFS file, else the git blob id."""
    if entry is None:
        return None
    return entry["sha256"] if entry.get("lfs") else entry["blobId"]


@router.post("/api/{kind}/{ns}/{name}/preupload/{revision:path}")
async def preupload(request: Request, kind: str, ns: str, name: str, revision: str):
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, f"{ns}/{name}", write=True)
    body = await request.json()
    with hub.storage.lock:
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


@router.post("/api/{kind}/{ns}/{name}/commit/{revision:path}")
async def create_commit(request: Request, kind: str, ns: str, name: str, revision: str):
    hub = hub_of(request)
    repo = hub.repo_for(request, kind, f"{ns}/{name}", write=True)
    ops = _read_operations(await request.body())
    header = ops.header
    if not header.get("summary"):
        raise HubError(400, "A commit needs a header line with a summary")
    try:
        commit = hub.storage.commit(
            repo,
            branch=revision.removeprefix("refs/heads/"),
            title=header["summary"],
            message=header.get("description", ""),
            added=ops.added,
            deleted_files=ops.deleted_files,
            deleted_folders=ops.deleted_folders,
            parent_commit=header.get("parentCommit"),
            lfs_added=ops.lfs_added,
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


@dataclass
class _Operations:
    """A commit's NDJSON lines: its header, and the files it adds and deletes."""

    header: dict[str, Any] = field(default_factory=dict)
    added: dict[str, bytes] = field(default_factory=dict)
    lfs_added: dict[str, tuple[str, int]] = field(default_factory=dict)
    deleted_files: list[str] = field(default_factory=list)
    deleted_folders: list[str] = field(default_factory=list)


def _read_operations(body: bytes) -> _Operations:
    ops = _Operations()
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value", {})
        if key == "header":
            ops.header = value
        elif key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
            ops.added[safe_path(value["path"])] = base64.b64decode(value["content"])
        elif key == "lfsFile":
            if value.get("algo") != "sha256":
                raise HubError(400, f"Unsupported LFS algorithm {value.get('algo')!r}")
            ops.lfs_added[safe_path(value["path"])] = (value["oid"], int(value["size"]))
        elif key == "deletedFile":
            ops.deleted_files.append(safe_path(value["path"]))
        elif key == "deletedFolder":
            ops.deleted_folders.append(safe_path(value["path"]))
        else:
            raise HubError(400, f"Unsupported commit operation {key!r}")
    return ops
