"""Command-line options made from a config dataclass's fields, as litgpt's CLI makes them.

A field declared with ``loradock.options.option()`` carries its flags and help
text; its name, type and default come from the dataclass. So an option's default and help are
written once, in the config, and the command takes them from there.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

import typer

from loradock.options import CLI


def dataclass_options(cls: type) -> list[inspect.Parameter]:
    """Keyword parameters (typer options) for the fields of ``cls`` that are CLI options."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(CLI)
        if meta is None:
            continue
        flags = meta.flags or ("--" + f.name.replace("_", "-"),)
        default = typer.Option(
            f.default, *flags, help=meta.help, envvar=meta.envvar, show_default=f.repr
        )
        kind = inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=hints[f.name]))
    return params


def with_options(command: typing.Callable, *classes: type) -> typing.Callable:
    """``command`` (whose ``**options`` receive them) with the options of ``classes`` added."""
    own = inspect.signature(command, eval_str=True).parameters.values()
    fixed = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = [p for cls in classes for p in dataclass_options(cls)]
    command.__signature__ = inspect.Signature([*fixed, *generated])
    return command
