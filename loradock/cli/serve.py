"""``loradock serve``: parse options into a ServerConfig and call ``serving.server.serve``.

Every option that is a config field (``--max-loaded``, ``--port``, ``--max-lora-rank``...)
is made from that field (``loradock/cli/_options.py``): its default and help text live in
``serving/config.py`` and ``serving/engines/vllm/options.py``. The four written here name
what is served: ``--merged REPO[@rev]`` serves a model published by ``loradock merge`` on vLLM
(``--engine peft`` also works); it stands for ``--base REPO@rev`` plus ``merged=True``, so it
excludes ``--base`` and ``--adapter``. ``--api-key-file`` / ``--admin-key-file`` read a key
from a file, so it never shows in ``ps`` (as ``LORADOCK_API_KEY`` / ``LORADOCK_ADMIN_KEY``).
"""

from __future__ import annotations

from pathlib import Path
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
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Read the API key from this file (not seen in ps)"),
    ] = None,
    admin_key_file: Annotated[
        Path | None,
        typer.Option("--admin-key-file", help="Read the admin key from this file"),
    ] = None,
    **options: Any,
) -> None:
    """Serve an OpenAI-compatible endpoint for the base and its adapters."""
    from loradock.errors import ConfigError
    from loradock.serving.server import serve

    options.update(_keys_from_files(options, api_key=api_key_file, admin_key=admin_key_file))

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
    if config.scale.replicas is not None:  # Ray is imported only here, only when asked for
        _serve_replicas(config)
    else:
        serve(config)


def _serve_replicas(config: ServerConfig) -> None:
    from loradock.errors import ConfigError

    try:
        from loradock.serving.scale.app import serve_replicas
    except ImportError as exc:
        raise ConfigError(
            "Invalid serve options",
            [f"--replicas needs Ray Serve ({exc.name} is missing): pip install 'loradock[scale]'"],
        ) from None
    serve_replicas(config)


def _keys_from_files(options: dict[str, Any], **files: Path | None) -> dict[str, str]:
    """``{"api_key": text}`` for each key given as a file; a key given both ways is refused."""
    from loradock.errors import ConfigError

    keys, problems = {}, []
    for name, path in files.items():
        if path is None:
            continue
        flag = "--" + name.replace("_", "-")
        if options.get(name) is not None:
            problems.append(f"{flag} and {flag}-file are both given (or its variable): give one")
            continue
        try:
            keys[name] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{flag}-file {str(path)!r} cannot be read: {exc.strerror}")
    if problems:
        raise ConfigError("Invalid serve options", problems)
    return keys


app.command("serve")(with_options(serve_command, ServerConfig, *PARTS.values()))
