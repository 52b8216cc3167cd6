"""``loradock serve``: parse options into a ServerConfig and call ``serving.server.serve``.

Every option that is a config field (``--max-loaded``, ``--port``, ``--max-lora-rank``...)
is made from that field (``loradock/cli/_options.py``): its default and help text live in
``serving/config.py`` and ``serving/engines/vllm/options.py``. The four written here name
what is served: ``--merged REPO[@rev]`` serves a model published by ``loradock merge`` on vLLM
(``--engine peft`` also works); it stands for ``--base REPO@rev`` plus ``merged=True``, so it
excludes ``--base`` and ``--adapter``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loradock.cli._options import with_options
from loradock.serving.config import PARTS, ServerConfig

app = typer.Typer()


def serve_command(
    base: Annotated[
        str | None, typer.Option("--base", help="Base model: org/name[@rev] or a folder")
    ] = None,
    merged: Annotated[
        str | None,
        typer.Option(
            "--merged",
            help="Serve a merged model (loradock merge) ORG/NAME[@rev] alone, no adapters; "
            "engine vllm unless --engine peft",
        ),
    ] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option("--adapter", help="Served alias NAME=ORG/REPO[@rev|@alias] (repeatable)"),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine", help="peft (hot-swap) or vllm (default: peft; vllm with --merged)"
        ),
    ] = None,
    **options: Any,
) -> None:
    """Serve an OpenAI-compatible endpoint for the base and its adapters."""
    from loradock.errors import ConfigError
    from loradock.serving.server import serve

    if merged is not None and (base is not None or adapter):
        given = " and ".join(f for f, v in (("--base", base), ("--adapter", adapter)) if v)
        raise ConfigError(
            "Invalid serve options",
            [
                f"--merged {merged!r} is given with {given}: a merged model is served alone; "
                "use either --merged ORG/NAME[@rev] or --base BASE [--adapter NAME=REPO ...]"
            ],
        )
    if merged is None and base is None:
        raise ConfigError(
            "Invalid serve options",
            ["name a model: --base BASE (with adapters) or --merged ORG/NAME[@rev]"],
        )
    if engine is None and merged is not None:
        engine = "vllm"
    if engine is not None:
        options["engine"] = engine
    config = ServerConfig.from_options(
        base=merged if merged is not None else base,
        merged=merged is not None,
        adapters=ServerConfig.parse_adapter_options(adapter or []),
        **options,
    )
    serve(config)


app.command("serve")(with_options(serve_command, ServerConfig, *PARTS.values()))
