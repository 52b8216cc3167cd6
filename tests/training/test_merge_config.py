"""``MergeConfig`` and the sources check: every problem listed at once, before weights load."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from loradock.errors import ConfigError
from loradock.training.merge_config import MergeConfig
from loradock.training.merge_sources import source_problems

A, B, C = "acme/a", "acme/b", "acme/c"


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        ({"sources": (A, B), "weights": (0.6, 0.3, 0.1)}, ["3 value(s) for 2 adapter(s)"]),
        ({"sources": (A, B), "weights": (math.nan, math.inf)}, ["finite numbers, got nan, inf"]),
        ({"sources": (A, B), "weights": (0.0, 0.0)}, ["all zero"]),
        ({"sources": (A, B), "method": "average"}, ["method='average' is not one of linear"]),
        ({"sources": (A, B), "method": "linear", "density": 0.5}, ["density is used by ties"]),
        ({"sources": (A, B), "method": "ties", "density": 1.5}, ["density=1.5 must be in (0, 1]"]),
        ({"sources": (A, B), "into": "lora", "dtype": "int8"}, ["into='lora'", "dtype='int8'"]),
        ({"sources": (A,), "weights": (1.0,), "method": "ties"}, ["weights need two", "needs two"]),
        ({"sources": (A,), "into": "adapter"}, ["into='adapter' needs two or more adapters"]),
        (
            {"sources": (A, B), "into": "adapter", "dtype": "bfloat16", "probe_rows": 4},
            ["dtype='bfloat16' applies to merged weights only", "probe_rows=4 applies"],
        ),
        ({"sources": (A, A)}, ["named more than once: acme/a"]),
        ({"sources": ()}, ["name at least one adapter"]),
        ({"sources": ("not a name",), "repo_id": "x"}, ["'not a name'", "Invalid repo id 'x'"]),
        (
            {"sources": (A,), "probe_rows": 0, "max_new_tokens": True},
            ["probe_rows=0", "tokens=True"],
        ),
        (
            {"sources": (A, B, C), "weights": (1, 2), "method": "svd", "density": -1},
            ["2 value(s) for 3", "density is used by"],
        ),
    ],
)
def test_bad_options_are_refused_together(options, problems):
    with pytest.raises(ConfigError) as caught:
        MergeConfig(**options)
    assert len(caught.value.problems) == len(problems), caught.value.problems
    for want, got in zip(problems, caught.value.problems, strict=True):
        assert want in got


@pytest.mark.parametrize(
    ("weights", "options", "problems"),
    [
        ("0.6,x", {}, ["'x' is not a number"]),
        ("0.6,x", {"method": "nope"}, ["'x' is not a number", "method='nope'"]),
        ("0.6", {}, ["1 value(s) for 2"]),
    ],
)
def test_command_line_weights_are_parsed_with_every_problem(weights, options, problems):
    with pytest.raises(ConfigError) as caught:
        MergeConfig.from_options([A, B], weights, **options)
    assert [any(p in got for got in caught.value.problems) for p in problems] == [True] * len(
        problems
    )


@pytest.mark.parametrize(
    ("options", "weights", "density", "target"),
    [
        ({"sources": (A,)}, (1.0,), None, "acme/a-merged"),
        ({"sources": (A, B)}, (0.5, 0.5), None, "acme/a-linear-merge"),
        ({"sources": (A, B), "method": "ties"}, (0.5, 0.5), 0.5, "acme/a-ties-merge"),
        (
            {"sources": (A, B), "weights": (2, -1), "method": "dare_ties", "density": 0.3},
            (2, -1),
            0.3,
            "acme/a-dare_ties-merge",
        ),
        ({"sources": (A, B), "into": "adapter", "repo_id": "acme/ab"}, (0.5, 0.5), None, "acme/ab"),
    ],
)
def test_good_options_and_what_they_mean(options, weights, density, target):
    config = MergeConfig(**options)
    assert config.weights_used == weights and config.density_used == density
    assert config.target_repo == target


def source(name, *, base="acme/base", revision=None, rank=4, peft_type="LORA", modules=("q",)):
    card = SimpleNamespace(base_model=base, base_revision=revision, task=None)
    artifact = SimpleNamespace(
        base_model=base,
        max_rank=rank,
        peft_type=peft_type,
        config={"target_modules": list(modules) if not isinstance(modules, str) else modules},
    )
    return SimpleNamespace(name=f"{name}@abc", card=card, artifact=artifact)


@pytest.mark.parametrize(
    ("method", "sources", "problems"),
    [
        ("ties", [source(A), source(B)], []),
        ("ties", [source(A), source(B, rank=8)], ["needs adapters of one rank"]),
        ("cat", [source(A), source(B, rank=8)], []),
        ("svd", [source(A), source(B, base="acme/other")], ["different bases"]),
        ("linear", [source(A, revision="1" * 40), source(B, revision="2" * 40)], ["different"]),
        ("linear", [source(A, revision="1" * 40), source(B)], []),
        ("linear", [source(A), source(B, modules="q|v")], ["a regex in others"]),
        (
            "linear",
            [source(A), source(B, base="acme/other", rank=8, peft_type="IA3")],
            ["different bases", "not LoRA adapters", "one rank"],
        ),
    ],
)
def test_sources_are_checked_together(method, sources, problems):
    config = MergeConfig(sources=tuple(s.name.split("@")[0] for s in sources), method=method)
    found = source_problems(config, sources)
    assert len(found) == len(problems), found
    for want, got in zip(problems, found, strict=True):
        assert want in got


@pytest.mark.parametrize(
    ("args", "problems"),
    [
        (["--weights", "0.6,x", "--method", "nope"], ["'x' is not a number", "method='nope'"]),
        (["--weights", "0,0", "--density", "0.5"], ["all zero", "density is used by"]),
        (
            ["--into", "lora", "--dtype", "int4", "--probe-rows", "0"],
            ["into", "dtype", "probe_rows"],
        ),
    ],
)
def test_the_command_line_lists_every_problem(args, problems):
    from typer.testing import CliRunner

    from loradock.cli import app

    result = CliRunner().invoke(app, ["merge", A, B, *args])
    assert isinstance(result.exception, ConfigError), result.output
    assert len(result.exception.problems) == len(problems), result.exception.problems
    for want, got in zip(problems, result.exception.problems, strict=True):
        assert want in got
