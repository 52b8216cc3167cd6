"""``loradock serve``: parse options into a ServerConfig and call ``serving.server.serve``.

``--merged REPO[@rev]`` serves a model published by ``loradock merge`` on vLLM (``--engine peft``
also works): it stands for ``--base REPO@rev`` plus ``merged=True``, so it excludes ``--base``
and ``--adapter``.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer()


@app.command("serve")
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
    served_name: Annotated[
        str | None,
        typer.Option(
            "--served-name",
            "--served-base-name",
            help="The base's model id in /v1/models and requests (default: --base, or a "
            "folder's own name)",
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine", help="peft (hot-swap) or vllm (default: peft; vllm with --merged)"
        ),
    ] = None,
    max_loaded: Annotated[int, typer.Option("--max-loaded", help="Adapters attached at once")] = 8,
    max_cpu_adapters: Annotated[
        int, typer.Option("--max-cpu-adapters", help="Adapters kept in CPU memory")
    ] = 64,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms")] = 5.0,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Waiting requests before 429")
    ] = 256,
    max_model_len: Annotated[int, typer.Option("--max-model-len")] = 512,
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto, float32, bfloat16, float16")
    ] = "auto",
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="LORADOCK_API_KEY", help="Bearer key")
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option("--admin-key", envvar="LORADOCK_ADMIN_KEY", help="Key for load/unload"),
    ] = None,
    only_listed: Annotated[
        bool,
        typer.Option("--only-listed", help="Serve only --adapter names, not any in the registry"),
    ] = False,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Torch threads of the model thread")
    ] = None,
    engine_process: Annotated[
        bool,
        typer.Option(
            "--engine-process/--in-process",
            help="PEFT: run the model in its own process (no GIL shared with HTTP work)",
        ),
    ] = True,
    max_lora_rank: Annotated[
        int | None,
        typer.Option("--max-lora-rank", help="vLLM: largest adapter rank (default: registry's)"),
    ] = None,
    tensor_parallel_size: Annotated[
        int | None,
        typer.Option("--tensor-parallel-size", help="vLLM: GPUs to split the model over"),
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            "--gpu-memory-utilization", help="vLLM: share of GPU memory to use, in (0, 1]"
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
) -> None:
    """Serve an OpenAI-compatible endpoint for the base and its adapters."""
    from loradock.errors import ConfigError
    from loradock.serving.config import ServerConfig
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
    config = ServerConfig(
        base=merged if merged is not None else base,
        merged=merged is not None,
        served_base_name=served_name,
        adapters=ServerConfig.parse_adapter_options(adapter or []),
        engine=engine or ("vllm" if merged is not None else "peft"),
        max_lora_rank=max_lora_rank,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_loaded=max_loaded,
        max_cpu_adapters=max_cpu_adapters,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_model_len=max_model_len,
        dtype=dtype,
        api_key=api_key,
        admin_key=admin_key,
        torch_threads=threads,
        engine_process=engine_process,
        host=host,
        port=port,
        allow_any_registry_adapter=not only_listed,
    )
    serve(config)
