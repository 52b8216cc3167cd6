"""ServerConfig validation (every problem at once) and the `loradock serve` command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loradock.errors import ConfigError
from loradock.serving.config import ServerConfig

BAD = [
    ({"base": ""}, "base '' is empty"),
    ({"engine": "tgi"}, "engine 'tgi'"),
    ({"dtype": "int3"}, "dtype 'int3'"),
    ({"max_loaded": 0}, "max_loaded=0"),
    ({"max_batch_size": -1}, "max_batch_size=-1"),
    ({"max_queue": 0}, "max_queue=0"),
    ({"max_model_len": 2}, "max_model_len=2"),
    ({"max_wait_ms": -5}, "max_wait_ms=-5"),
    ({"port": 70000}, "port=70000"),
    ({"torch_threads": 0}, "torch_threads=0"),
    ({"adapters": {"a/b": "acme/x"}}, "served adapter name 'a/b'"),
    ({"adapters": {"dates": "/tmp/adapter"}}, "expected a registry name"),
    ({"api_key": "k"}, "api_key must be"),
    ({"served_base_name": "/srv/models/base"}, "served base name '/srv/models/base'"),
    ({"served_base_name": "a/b/c"}, "never a path"),
    ({"served_base_name": "../up"}, "never a path"),
    ({"served_base_name": "has space"}, "served base name 'has space'"),
    ({"served_base_name": "x", "adapters": {"x": "acme/x"}}, "also an --adapter name"),
]


@pytest.mark.parametrize(("options", "fragment"), BAD, ids=[b[1][:20] for b in BAD])
def test_bad_options_are_named(options, fragment):
    with pytest.raises(ConfigError) as info:
        ServerConfig(**{"base": "tiny/base", **options})
    assert fragment in str(info.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        ServerConfig(base="tiny/base", engine="x", max_loaded=0, port=-1)
    assert len(info.value.problems) == 3


@pytest.mark.parametrize(
    ("base", "served", "expected"),
    [
        ("tiny/base", None, "tiny/base"),
        ("tiny/base@prod", None, "tiny/base@prod"),
        ("/srv/models/SmolLM2-135M", None, "SmolLM2-135M"),
        ("/srv/models/my model/", None, "my-model"),
        ("./base", None, "base"),
        ("~/models/x", None, "x"),
        ("/srv/models/SmolLM2-135M", "acme/smollm2", "acme/smollm2"),
        ("tiny/base", "tiny", "tiny"),
    ],
)
def test_served_base_name(base, served, expected):
    assert ServerConfig(base=base, served_base_name=served).base_model_name == expected


def test_cli_served_name_reaches_the_config(monkeypatch):
    from loradock.cli import app

    seen = []
    monkeypatch.setattr("loradock.serving.server.serve", seen.append)
    args = ["serve", "--base", "/srv/models/base", "--served-name", "acme/base", "--port", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen[0].base == "/srv/models/base" and seen[0].base_model_name == "acme/base"


def test_adapter_options_parse():
    parsed = ServerConfig.parse_adapter_options(["dates=acme/dates@prod", "json=acme/json"])
    assert parsed == {"dates": "acme/dates@prod", "json": "acme/json"}
    with pytest.raises(ConfigError) as info:
        ServerConfig.parse_adapter_options(["nodelim", "a=x/y", "a=x/z", "=x/y"])
    assert len(info.value.problems) == 3


def test_cli_rejects_bad_options_without_starting():
    from loradock.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--base", "tiny/base", "--max-loaded", "0", "--adapter", "oops"]
    )
    assert result.exit_code != 0
    assert "NAME=ORG/REPO" in str(result.exception) or "NAME=ORG/REPO" in result.output


def test_cli_help_lists_engine_option():
    from loradock.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--engine" in result.output and "--max-loaded" in result.output
