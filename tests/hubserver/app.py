"""The Hub HTTP API, as much of it as huggingface_hub's ``HfApi`` uses for loradock.

Answers like huggingface.co does where the client looks: error codes in ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), 401 for anonymous access to
private or missing repos, ``Link: <...>; rel="next"`` pagination, ``X-Repo-Commit`` and
``ETag`` on resolve. Large and binary files go through Git LFS as on the Hub (``lfs.py``),
the others inline (base64) in the NDJSON commit; no Xet (never sends ``X-Xet-Hash``).

The routes live by what they serve: ``repo_routes``, ``upload_routes``, ``ref_routes``,
``file_routes`` and ``lfs``; access checks in ``access``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import file_routes, ref_routes, repo_routes, upload_routes
from .access import HubAccess
from .errors import HubError
from .lfs import add_lfs_routes
from .storage import HubStorage


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

    hub = app.state.hub = HubAccess(storage, tokens, page_size)
    # Starlette matches routes in the order they are added: the catch-all file routes
    # (``/{ns}/{name}/resolve/...``) come after the API's.
    for routes in (repo_routes, upload_routes, ref_routes, file_routes):
        app.include_router(routes.router)
    add_lfs_routes(app, storage, hub.repo_for)
    return app
