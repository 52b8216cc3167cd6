"""The ``loradock`` command: a thin typer app; each part's commands live in their own module.

Commands parse arguments into a config object and call one function of a part; no logic
lives here that a Python user could not call. Known errors (``LoradockError``) print as
their message alone, without a traceback, and exit with status 1.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from loradock.errors import LoradockError

app = typer.Typer(
    name="loradock",
    help="Registry and serving system for LoRA adapters, integrated with the Hugging Face Hub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, sub-command group name or None to add its commands at the top level)
_PARTS: list[tuple[str, str | None]] = [
    ("loradock.cli.registry", "registry"),
    ("loradock.cli.base", "base"),
    ("loradock.cli.train", None),
    ("loradock.cli.serve", None),
    ("loradock.cli.eval", None),
    ("loradock.cli.space", "space"),
    ("loradock.cli.demo", None),
]


def _mount() -> None:
    for module_name, group in _PARTS:
        module = importlib.import_module(module_name)
        sub = module.app
        if group is None:
            for command in sub.registered_commands:
                app.registered_commands.append(command)
            for grp in sub.registered_groups:
                app.registered_groups.append(grp)
        else:
            app.add_typer(sub, name=group)


_mount()

err_console = Console(stderr=True)


def main() -> None:
    """Entry point of the ``loradock`` script."""
    try:
        app()
    except LoradockError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
