"""Read-only registry views over HTTP, for the Gradio Space (which imports no loradock code).

``GET /v1/registry/adapters`` returns index rows (with metrics) filtered like
``Registry.search``; ``GET /v1/registry/adapters/{org}/{name}/card`` returns the card text
of a revision plus the repo's revisions and aliases, for repos the index holds (unless the
server runs with ``--any-registry-adapter``): reading a card never makes the server fetch a
repo it does not know. ``GET /v1/registry/adapters/{org}/{name}/files/{path}?revision=``
returns a file the card links (its loss plot), for the same repos, from the revision's
verified snapshot: images and text only, typed for a browser that must not run them
(``card_files.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool

from loradock.errors import AdapterNotFoundError, RequestError
from loradock.registry.names import parse_name
from loradock.registry.records import KINDS
from loradock.registry.search_query import SearchQuery
from loradock.serving.http.card_files import media_type_of, read_card_file
from loradock.serving.http.state import ServerState, state_of

router = APIRouter(prefix="/v1/registry")
MAX_ROWS = 500


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def _row(record: Any) -> dict[str, Any]:
    row = jsonable(record)
    if isinstance(row, dict) and "repo_id" in row and "sha" in row:
        row.setdefault("name", f"{row['repo_id']}@{row['sha']}")
    return row


@router.get("/adapters")
async def list_adapters(
    base: str | None = None,
    task: str | None = None,
    tag: str | None = None,
    metric: str | None = None,
    min_value: float | None = None,
    sort: str | None = None,
    descending: bool = True,
    limit: int = Query(default=50, ge=1, le=MAX_ROWS),
    kind: str = "adapter",
    state: ServerState = Depends(state_of),
):
    if kind not in KINDS:
        raise RequestError(
            f"kind {kind!r} is not one of {', '.join(KINDS)}: 'adapter' lists LoRA adapters, "
            "'base' base models' own rows (their eval results), 'merge' merged models"
        )
    query = SearchQuery(
        base_model=base,
        task=task,
        tag=tag,
        metric=metric,
        min_value=min_value,
        sort=sort,
        descending=descending,
        limit=limit,
        kind=kind,
    )
    rows = await run_in_threadpool(state.registry.search, query)
    return {"object": "list", "data": [_row(r) for r in rows]}


def _ref(org: str, name: str, revision: str | None) -> tuple[str, str]:
    """(repo id, ``repo@revision``), checked before anything reaches the registry."""
    if revision is not None and ("/" in revision or ".." in revision):
        raise RequestError(f"revision {revision!r} is not a sha, branch or alias")
    repo_id = f"{org}/{name}"
    ref = f"{repo_id}@{revision}" if revision else repo_id
    parse_name(ref)  # InvalidNameError (400): whitespace, control characters, a bad revision
    return repo_id, ref


def _indexed_revisions(state: ServerState, repo_id: str) -> list[dict[str, Any]]:
    """The repo's indexed revisions; a repo outside the index is refused (unless the server
    runs with ``--any-registry-adapter``), so no request makes it fetch an unknown repo."""
    try:
        revisions = [_row(r) for r in state.registry.revisions(repo_id)]
    except AdapterNotFoundError:
        revisions = []
    if not revisions and state.config.http.adapter_scope != "any":
        raise AdapterNotFoundError(
            f"{repo_id!r} is not in this server's index: only indexed repos' cards and files "
            "are served (GET /v1/registry/adapters lists them)."
        )
    return revisions


@router.get("/adapters/{org}/{name}/card")
async def adapter_card(
    org: str,
    name: str,
    revision: str | None = None,
    state: ServerState = Depends(state_of),
):
    registry = state.registry
    repo_id, ref = _ref(org, name, revision)

    def read() -> dict[str, Any]:
        revisions = _indexed_revisions(state, repo_id)
        resolved = registry.resolve(ref)
        aliases = dict(registry.aliases(repo_id))
        card = resolved.card
        return {
            "repo_id": resolved.repo_id,
            "sha": resolved.sha,
            "card": card.to_text() if hasattr(card, "to_text") else str(card or ""),
            "revisions": revisions,
            "aliases": aliases,
        }

    return await run_in_threadpool(read)


@router.get("/adapters/{org}/{name}/files/{path:path}")
async def adapter_file(
    org: str,
    name: str,
    path: str,
    revision: str | None = None,
    state: ServerState = Depends(state_of),
):
    repo_id, ref = _ref(org, name, revision)
    media_type_of(path)  # a refused path or type costs the registry nothing

    def read() -> Response:
        _indexed_revisions(state, repo_id)
        sha = state.registry.resolve(ref).sha
        found = read_card_file(state.registry, repo_id, sha, path)
        return Response(found.data, media_type=found.media_type, headers=found.headers())

    return await run_in_threadpool(read)
