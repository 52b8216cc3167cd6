"""``loradock demo``: the whole adapter lifecycle in one command, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


@app.command()
def demo(
    small: Annotated[
        bool, typer.Option("--small", help="Tiny random model and a few steps (what CI runs).")
    ] = False,
    home: Annotated[
        Path | None, typer.Option(help="LORADOCK_HOME for the demo (default: the environment's).")
    ] = None,
    api_port: Annotated[int, typer.Option(help="Port of the endpoint (0: a free one).")] = 0,
    space_port: Annotated[int, typer.Option(help="Port of the Gradio Space (0: a free one).")] = 0,
    keep_running: Annotated[
        bool | None,
        typer.Option(
            "--keep-running/--exit",
            help="Leave the endpoint and the Space up until Ctrl-C (default: when interactive).",
        ),
    ] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Rows per eval task.")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON at the end.")
    ] = False,
) -> None:
    """Import the base model, train the two task adapters, evaluate them, publish and rank
    them, serve them all from one endpoint and open the Gradio Space: offline, no token, no GPU.

    A second run reuses what the first built.
    """
    from loradock.cli._common import print_json
    from loradock.demo import DemoConfig, run_demo

    config = DemoConfig(
        small=small,
        home=home,
        api_port=api_port,
        space_port=space_port,
        keep_running=sys.stdin.isatty() if keep_running is None else keep_running,
        eval_limit=eval_limit,
    )
    result = run_demo(config)
    if json_out:
        print_json(result)
