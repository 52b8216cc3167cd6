"""The HTTP layer: ``create_app(engine, *, registry, config)`` builds the FastAPI app.

Routes live in ``openai_routes.py`` (completions, chat), ``admin_routes.py`` (models, admin,
health, metrics) and ``registry_routes.py`` (read-only registry views for the Space); each
reaches the server's state through the ``state_of`` dependency (``state.py``). Keys and the
body size are checked below the app, before a body is read (``gate.py``). Every error leaves
as the OpenAI error shape (``errors.py``), with the server's folders redacted.
"""

from __future__ import annotations

import gc
import logging
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from loradock.errors import LoradockError
from loradock.serving.config import ServerConfig, looks_like_path
from loradock.serving.engines.base import Engine
from loradock.serving.http import admin_routes, openai_routes, registry_routes, tokenize_routes
from loradock.serving.http.auth import KeyChecker
from loradock.serving.http.errors import (
    Redactor,
    error_response,
    exception_response,
    validation_message,
)
from loradock.serving.http.gate import RequestGate
from loradock.serving.http.metrics import ServerMetrics
from loradock.serving.http.state import ServerState
from loradock.serving.resolver import AdapterResolver

log = logging.getLogger(__name__)


def create_app(
    engine: Engine,
    *,
    registry: Any,
    config: ServerConfig,
    base: Any = None,
) -> FastAPI:
    """Build the app; the engine starts when the app starts (uvicorn's lifespan).

    ``base`` is the served base as ``Registry.resolve_base`` returns it (or its folder):
    adapters are checked against it before they are attached.
    """
    base = registry.resolve_base(config.base) if base is None else base
    resolver = _resolver(engine, registry, config, base)
    state = ServerState(
        engine=engine,
        registry=registry,
        config=config,
        resolver=resolver,
        metrics=ServerMetrics(engine, resolver),
        keys=KeyChecker(api_key=config.http.api_key, admin_key=config.http.admin_key),
        redact=Redactor(_server_paths(registry, base)),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        # Everything alive now (torch, transformers, the model) lives as long as the server:
        # frozen, the cyclic GC stops re-scanning it. Unfrozen, each full collection walked
        # ~650k objects and stopped every thread (the model's too) for ~0.3 s.
        gc.collect()
        gc.freeze()
        state.started = True
        try:
            yield
        finally:
            state.started = False
            await engine.shutdown()
            gc.unfreeze()

    docs = config.http.docs  # off by default: the schema lists every route and field
    paths = {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    app = FastAPI(
        title="loradock", lifespan=lifespan, **{k: v if docs else None for k, v in paths.items()}
    )
    app.state.loradock = state
    _add_error_handlers(app, state)
    routers = (admin_routes, openai_routes, registry_routes, tokenize_routes)
    for router in (r.router for r in routers):
        app.include_router(router)
    public = {"/health", "/metrics", *(paths.values() if docs else ())}
    app.add_middleware(
        RequestGate,
        keys=state.keys,
        max_body_bytes=config.http.max_request_bytes,
        public_paths=public,
    )
    return app


def _server_paths(registry: Any, base: Any) -> list[str]:
    """Folders of this machine an error message could name: redacted before it leaves."""
    settings = getattr(registry, "settings", None)
    found = [getattr(settings, n, None) for n in ("home", "hub_dir", "cache_dir", "index_path")]
    folder = getattr(base, "path", base)
    return [str(p) for p in (*found, folder, tempfile.gettempdir(), Path.home()) if p]


def _resolver(engine: Engine, registry: Any, config: ServerConfig, base: Any) -> AdapterResolver:
    return AdapterResolver(
        registry,
        base_name=config.base_model_name,
        # `--base org/name --served-name x`: the registry name still names the base.
        base_aliases=() if looks_like_path(config.base) else (config.base,),
        base=base,
        served=config.adapters,
        scope=config.http.adapter_scope,
        max_lora_rank=engine.capabilities.max_lora_rank,
        merged=config.merged or engine.capabilities.merged,
    )


def _add_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(LoradockError)
    async def _loradock_error(request: Request, exc: LoradockError):
        state.metrics.requests.labels(_route(request), str(exc.http_status)).inc()
        return exception_response(exc, state.redact(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        state.metrics.requests.labels(_route(request), "400").inc()
        message, param = validation_message(exc)
        return error_response(400, state.redact(message), "invalid_parameter", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(exc.status_code, message, None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"Internal error: {type(exc).__name__}", "internal_error")


def _route(request: Request) -> str:
    """The route's template (``/v1/registry/adapters/{org}/{name}/card``): bounded labels."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"
