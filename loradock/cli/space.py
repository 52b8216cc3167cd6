"""``loradock space``: run the Gradio Space locally, or deploy it as a Hugging Face Space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loradock.cli._common import console, print_json
from loradock.errors import ConfigError

app = typer.Typer(help="The Gradio Space: compare a base model and its adapters side by side.")


@app.command("run")
def run_command(
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", envvar="LORADOCK_ENDPOINT", help="loradock endpoint URL"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="LORADOCK_API_KEY", help="The endpoint's API key"),
    ] = None,
    arena_db: Annotated[
        Path | None,
        typer.Option("--arena-db", envvar="LORADOCK_ARENA_DB", help="SQLite file for votes"),
    ] = None,
    arena_dataset: Annotated[
        str | None,
        typer.Option(
            "--arena-dataset",
            envvar="LORADOCK_ARENA_DATASET",
            help="Hub dataset repo (ORG/NAME) the votes are also committed to, so a rebuilt "
            "Space keeps them (HF_ENDPOINT, HF_TOKEN)",
        ),
    ] = None,
    arena_votes_dir: Annotated[
        Path | None,
        typer.Option(
            "--arena-votes-dir",
            envvar="LORADOCK_ARENA_VOTES_DIR",
            help="Folder the votes are also written to (instead of a dataset repo)",
        ),
    ] = None,
    trusted_endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-endpoint",
            help="Another endpoint a visitor may switch to that gets the Space's key and "
            "counts on its arena (repeatable; default LORADOCK_TRUSTED_ENDPOINTS)",
        ),
    ] = None,
    lock_endpoint: Annotated[
        bool | None,
        typer.Option(
            "--lock-endpoint/--no-lock-endpoint",
            help="Refuse every endpoint but --endpoint (default LORADOCK_LOCK_ENDPOINT; "
            "locked on a Hugging Face Space)",
        ),
    ] = None,
    votes_per_session: Annotated[
        int | None,
        typer.Option(
            "--votes-per-session",
            help="Arena votes one page session may cast (default "
            "LORADOCK_ARENA_VOTES_PER_SESSION, else 30)",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 7860,
) -> None:
    """Serve the Space on HOST:PORT, talking to a loradock endpoint over HTTP."""
    from loradock.spaces.app import build_app
    from loradock.spaces.client import EndpointError
    from loradock.spaces.layout import CSS

    try:
        demo = build_app(
            endpoint=endpoint,
            api_key=api_key,
            trusted_endpoints=trusted_endpoint or None,
            lock_endpoint=lock_endpoint,
            arena_db=arena_db,
            arena_dataset=arena_dataset,
            arena_votes_dir=arena_votes_dir,
            votes_per_session=votes_per_session,
        )
    except (ValueError, EndpointError) as exc:
        raise ConfigError("The Space cannot start with these settings", [str(exc)]) from None
    try:
        demo.queue(default_concurrency_limit=8).launch(server_name=host, server_port=port, css=CSS)
    finally:  # launch returns on Ctrl-C: the votes still staged go to the dataset repo
        demo.loradock_space.close()


@app.command("deploy")
def deploy_command(
    repo: Annotated[str, typer.Option("--repo", help="Space repo id, ORG/NAME")],
    private: Annotated[bool, typer.Option("--private", help="Create the Space private")] = False,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Commit message")
    ] = "Deploy the loradock Space",
    as_json: Annotated[bool, typer.Option("--json", help="Print the commit as JSON")] = False,
) -> None:
    """Upload spaces/ as a Space repo through the registry's store (local hub or the Hub)."""
    from loradock.spaces.deploy import deploy_space

    commit = deploy_space(repo, private=private, commit_message=message)
    if as_json:
        print_json(commit)
    else:
        console.print(f"Deployed Space [bold]{commit.repo_id}[/] at {commit.sha}")
