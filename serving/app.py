"""The HTTP layer: ``create_app(engine, *, registry, config)`` builds the FastAPI app.

Routes live in ``openai_routes.py`` (completions, chat), ``registry_routes.py`` (read-only
registry views for the Space) and here (models, admin, health, metrics). Every error leaves as
the OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``, produced in ONE
place (``_error_response``) from ``loradock.errors``' ``http_status`` and ``code``.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from loradock.errors import LoradockError
from loradock.serving.auth import KeyChecker
from loradock.serving.config import ServerConfig, looks_like_path
from loradock.serving.engine import Engine
from loradock.serving.metrics import CONTENT_TYPE, ServerMetrics
from loradock.serving.resolver import AdapterResolver
from loradock.serving.schemas import AdapterLoadRequest, ModelCard, ModelList

log = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass
class ServerState:
    engine: Engine
    registry: Any
    config: ServerConfig
    resolver: AdapterResolver
    metrics: ServerMetrics
    keys: KeyChecker
    started: bool = False


def _error_response(status: int, message: str, code: str | None, param: str | None = None):
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The error shape for an exception raised mid-stream (sent as an SSE event)."""
    status = getattr(exc, "http_status", 500)
    message = str(exc) if isinstance(exc, LoradockError) else "Internal error while generating"
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": getattr(exc, "code", "internal_error"),
        }
    }


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        param = param or field
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        parts.append(f"{field}: {msg}{shown}")
    return "Invalid request: " + "; ".join(parts), param


def state_of(request: Request) -> ServerState:
    return request.app.state.loradock


def create_app(
    engine: Engine,
    *,
    registry: Any,
    config: ServerConfig,
    base: Any = None,
    resolver: AdapterResolver | None = None,
) -> FastAPI:
    """Build the app; the engine starts when the app starts (uvicorn's lifespan).

    ``base`` is the served base as ``Registry.resolve_base`` returns it (or its folder):
    adapters are checked against it before they are attached.
    """
    if resolver is None:
        if base is None:
            base = registry.resolve_base(config.base)
        resolver = AdapterResolver(
            registry,
            base_name=config.base_model_name,
            # `--base org/name --served-name x`: the registry name still names the base.
            base_aliases=() if looks_like_path(config.base) else (config.base,),
            base=base,
            served=config.adapters,
            allow_any=config.allow_any_registry_adapter,
            max_lora_rank=engine.capabilities.max_lora_rank,
            merged=config.merged or engine.capabilities.merged,
        )
    state = ServerState(
        engine=engine,
        registry=registry,
        config=config,
        resolver=resolver,
        metrics=ServerMetrics(engine),
        keys=KeyChecker(api_key=config.api_key, admin_key=config.admin_key),
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

    app = FastAPI(title="loradock", lifespan=lifespan)
    app.state.loradock = state

    @app.exception_handler(LoradockError)
    async def _loradock_error(request: Request, exc: LoradockError):
        state.metrics.requests.labels(_route(request), str(exc.http_status)).inc()
        return _error_response(exc.http_status, str(exc), exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        state.metrics.requests.labels(_route(request), "400").inc()
        message, param = _validation_message(exc)
        return _error_response(400, message, "invalid_parameter", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error_response(exc.status_code, message, None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error_response(500, f"Internal error: {type(exc).__name__}", "internal_error")

    api = Depends(state.keys.require_api_key)
    admin = Depends(state.keys.require_admin)

    @app.get("/health")
    async def health():
        caps = engine.capabilities
        stopped = getattr(engine, "dead", None)  # the engine's process exited
        body = {
            "status": "engine_stopped" if stopped else "ok" if state.started else "starting",
            "engine": caps.name,
            "base": config.base_model_name,
            "merged": config.merged,
            "max_loaded": caps.max_loaded,
            "max_model_len": caps.max_model_len,
            "loaded_adapters": engine.loaded_adapters(),
        }
        if stopped:  # 503: a load balancer takes this server out; the message says why
            return JSONResponse({**body, "detail": stopped}, status_code=503)
        return body

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=[api])
    async def list_models() -> ModelList:
        base = config.base_model_name
        loaded = set(engine.loaded_adapters())
        cards = [ModelCard(id=base, root=base)]
        seen = {base}
        for alias, target in sorted(config.adapters.items()):
            cards.append(ModelCard(id=alias, parent=base, root=target, loaded=alias in loaded))
            seen.add(alias)
        if config.allow_any_registry_adapter and config.serves_adapters:
            for row in await run_in_threadpool(_compatible_rows, registry, config.base):
                if row.repo_id not in seen:
                    seen.add(row.repo_id)
                    cards.append(
                        ModelCard(
                            id=row.repo_id,
                            parent=base,
                            root=f"{row.repo_id}@{row.sha}",
                            loaded=row.repo_id in loaded,
                        )
                    )
        for name in sorted(loaded - seen):
            cards.append(ModelCard(id=name, parent=base, loaded=True))
        return ModelList(data=cards)

    @app.post("/v1/adapters/load", dependencies=[admin])
    async def load_adapter(body: AdapterLoadRequest):
        spec = await run_in_threadpool(state.resolver.resolve, body.model)
        if spec is None:
            return {"model": body.model, "status": "base model: always loaded"}
        await engine.load(spec)
        state.metrics.requests.labels("/v1/adapters/load", "200").inc()
        return {"model": spec.name, "repo_id": spec.repo_id, "sha": spec.sha, "status": "loaded"}

    @app.post("/v1/adapters/unload", dependencies=[admin])
    async def unload_adapter(body: AdapterLoadRequest):
        if state.resolver.is_base(body.model):
            raise _base_unload(body.model)
        await engine.unload(body.model)
        state.metrics.requests.labels("/v1/adapters/unload", "200").inc()
        return {"model": body.model, "status": "unloaded"}

    from loradock.serving.openai_routes import router as openai_router
    from loradock.serving.registry_routes import router as registry_router

    app.include_router(openai_router, dependencies=[api])
    app.include_router(registry_router, dependencies=[api])
    return app


def _route(request: Request) -> str:
    """The route's template (``/v1/registry/adapters/{org}/{name}/card``): bounded labels."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _base_unload(name: str) -> LoradockError:
    from loradock.errors import RequestError

    return RequestError(f"{name!r} is the base model: it cannot be unloaded.")


def _compatible_rows(registry: Any, base: str) -> list[Any]:
    """Registry adapters made for this base (by its registry name), newest revision each."""
    try:
        return list(registry.search(base_model=base.split("@", 1)[0], limit=500))
    except LoradockError:
        return []
