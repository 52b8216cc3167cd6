"""Models, adapter preloading, health and metrics: the routes beside the OpenAI ones.

Keys are checked by ``gate.py`` from the path: ``/health`` and ``/metrics`` need none (load
balancers and Prometheus read them), ``/v1/adapters/...`` the admin key, the rest the API key.
``/health`` without a key says only whether the server is up: which adapters are loaded (some
may be private) is for key holders.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from loradock.errors import LoradockError, RequestError
from loradock.serving.http.metrics import CONTENT_TYPE
from loradock.serving.http.responses import ModelCard, ModelList
from loradock.serving.http.schemas import AdapterLoadRequest
from loradock.serving.http.state import ServerState, state_of

router = APIRouter()


@router.get("/health")
async def health(request: Request, state: ServerState = Depends(state_of)):
    engine, config = state.engine, state.config
    caps = engine.capabilities
    stopped = engine.health()  # why the engine is not running (its process exited...)
    # The PEFT engine process is supervised: restarted when it dies, until a crash loop.
    supervision = engine.supervision() if hasattr(engine, "supervision") else None
    restarting = supervision is not None and supervision["state"] == "restarting"
    status = "restarting" if restarting else "engine_stopped" if stopped else None
    body: dict[str, Any] = {"status": status or ("ok" if state.started else "starting")}
    if state.keys.authorized(request.headers.get("authorization")):
        body |= {
            "engine": caps.name,
            "base": config.base_model_name,
            "merged": config.merged,
            "max_loaded": caps.max_loaded,
            "max_model_len": caps.max_model_len,
            "loaded_adapters": engine.loaded_adapters(),
        }
        if stopped:
            body["detail"] = stopped
        if supervision is not None:
            body["engine_process"] = supervision
    if stopped:  # 503: a load balancer takes this server out (until a restart brings it back)
        return JSONResponse(body, status_code=503)
    return body


@router.get("/metrics")
async def metrics(state: ServerState = Depends(state_of)):
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/models")
async def list_models(state: ServerState = Depends(state_of)) -> ModelList:
    engine, config = state.engine, state.config
    base = config.base_model_name
    loaded = set(engine.loaded_adapters())
    cards = [ModelCard(id=base, root=base)]
    seen = {base}
    for alias, target in sorted(config.adapters.items()):
        cards.append(ModelCard(id=alias, parent=base, root=target, loaded=alias in loaded))
        seen.add(alias)
    if config.http.adapter_scope != "listed" and config.serves_adapters:
        for row in await run_in_threadpool(_compatible_rows, state.registry, config.base):
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


@router.post("/v1/adapters/load")
async def load_adapter(body: AdapterLoadRequest, state: ServerState = Depends(state_of)):
    spec = await run_in_threadpool(lambda: state.resolver.resolve(body.model, admin=True))
    if spec is None:
        return {"model": body.model, "status": "base model: always loaded"}
    await state.engine.load(spec)
    state.metrics.requests.labels("/v1/adapters/load", "200").inc()
    return {"model": spec.name, "repo_id": spec.repo_id, "sha": spec.sha, "status": "loaded"}


@router.post("/v1/adapters/unload")
async def unload_adapter(body: AdapterLoadRequest, state: ServerState = Depends(state_of)):
    if state.resolver.is_base(body.model):
        raise RequestError(f"{body.model!r} is the base model: it cannot be unloaded.")
    await state.engine.unload(body.model)
    state.metrics.requests.labels("/v1/adapters/unload", "200").inc()
    return {"model": body.model, "status": "unloaded"}


def _compatible_rows(registry: Any, base: str) -> list[Any]:
    """Registry adapters made for this base (by its registry name), newest revision each."""
    try:
        return list(registry.search(base_model=base.split("@", 1)[0], limit=500))
    except LoradockError:
        return []
