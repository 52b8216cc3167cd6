"""``serve(config)``: registry + engine + app, run by uvicorn (``loradock serve`` calls this).

``build_engine`` is the one place that picks an engine. The vLLM branch calls
``loradock.serving.engines.vllm.engine.create_engine(config, base_path, registry=registry)``, imported
only when asked for, so the PEFT server never imports vLLM; with the registry, vLLM's LoRA
limits (``max_lora_rank``...) are derived from the adapters the server may serve.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError, LoradockError
from loradock.serving.config import ServerConfig
from loradock.serving.engines.base import Engine

log = logging.getLogger(__name__)


def build_engine(config: ServerConfig, base_path: str | Path, *, registry: Any = None) -> Engine:
    """The engine ``config`` asks for, serving the model folder ``base_path``."""
    if config.engine == "vllm":
        from loradock.serving.engines.vllm.engine import create_engine

        return create_engine(config, base_path, registry=registry)
    if config.engine_process:
        from loradock.serving.engines.peft.process import ProcessEngine

        engine = ProcessEngine.from_config(config, base_path)
    else:
        from loradock.serving.engines.peft.engine import PeftEngine

        engine = PeftEngine.from_config(config, base_path)
    if config.merged:  # the app refuses adapter names; the capabilities say why
        engine.capabilities = replace(engine.capabilities, merged=True, max_lora_rank=None)
    return engine


def check_merged_model(config: ServerConfig, path: str | Path) -> None:
    """``--merged`` must name a full model (``loradock merge`` output), not an adapter."""
    folder = Path(path)
    if config.merged and not (folder / "config.json").is_file():
        what = "an adapter" if (folder / "adapter_config.json").is_file() else "not a model"
        raise ConfigError(
            "Invalid server options",
            [
                f"merged model {config.base!r} is {what} (no config.json): publish the merged "
                "weights with `loradock merge`, or serve an adapter with --base BASE --adapter "
                "NAME=REPO"
            ],
        )


def build_app(config: ServerConfig, *, registry: Any = None):
    """The ready-to-run FastAPI app for ``config`` (the engine starts with the app)."""
    from loradock.serving.http.app import create_app

    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    base = registry.resolve_base(config.base)
    check_merged_model(config, base.path)
    engine = build_engine(config, base.path, registry=registry)
    app = create_app(engine, registry=registry, config=config, base=base)
    check_listed_adapters(config, app.state.loradock.resolver)
    return app


def check_listed_adapters(config: ServerConfig, resolver: Any) -> None:
    """Every ``--adapter`` resolved and checked against the base before the server starts:
    a missing repo, revision or alias, or an adapter the engine cannot serve, stops it with
    the reason (one ``ConfigError`` naming each), instead of a 404 on every request later."""
    problems = []
    for name, target in config.adapters.items():
        try:
            resolver.resolve(name)
        except LoradockError as exc:
            problems.append(f"--adapter {name}={target}: {exc}")
    if problems:
        raise ConfigError("Adapters given with --adapter cannot be served", problems)


def serve(config: ServerConfig, *, registry: Any = None) -> None:
    """Build everything and serve until interrupted."""
    import uvicorn

    app = build_app(config, registry=registry)
    host, port = config.http.host, config.http.port
    for warning in config.http.exposure():
        log.warning("%s", warning)
    log.info("serving %s on http://%s:%s", config.base_model_name, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
