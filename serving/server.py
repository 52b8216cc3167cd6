"""``serve(config)``: registry + engine + app, run by uvicorn (``loradock serve`` calls this).

``build_engine`` is the one place that picks an engine. The vLLM branch calls
``loradock.serving.vllm_engine.create_engine(config, base_path) -> Engine`` (S2's module),
imported only when asked for, so the PEFT server never imports vLLM.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from loradock.serving.config import ServerConfig
from loradock.serving.engine import Engine

log = logging.getLogger(__name__)


def build_engine(config: ServerConfig, base_path: str | Path) -> Engine:
    if config.engine == "vllm":
        from loradock.serving.vllm_engine import create_engine

        return create_engine(config, base_path)
    from loradock.serving.peft_engine import PeftEngine

    return PeftEngine.from_config(config, base_path)


def build_app(config: ServerConfig, *, registry: Any = None):
    """The ready-to-run FastAPI app for ``config`` (the engine starts with the app)."""
    from loradock.serving.app import create_app

    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    base = registry.resolve_base(config.base)
    engine = build_engine(config, base.path)
    return create_app(engine, registry=registry, config=config, base=base)


def serve(config: ServerConfig, *, registry: Any = None) -> None:
    """Build everything and serve until interrupted."""
    import uvicorn

    app = build_app(config, registry=registry)
    log.info("serving %s on http://%s:%s", config.base_model_name, config.host, config.port)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
