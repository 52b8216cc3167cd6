"""Bad inputs fail fast (before any model loads) with an error that quotes the bad value."""

from __future__ import annotations

import shutil

import pytest

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    BaseModelNotFoundError,
    ConfigError,
    DataError,
    EvalError,
    IncompatibleAdapterError,
    InvalidNameError,
    RevisionNotFoundError,
)
from tests.helpers.evals import BASE_ID, publish_tiny


@pytest.fixture(scope="module")
def setup(module_home, tiny_base, tiny_adapter_factory, tmp_path_factory):
    """The tiny registry plus an adapter trained on another (smaller) base."""
    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    registry = Registry.open()
    publish_tiny(registry, tiny_base, tiny_adapter_factory)
    root = tmp_path_factory.mktemp("other")
    other = make_tiny_base(root / "base", hidden_size=32, num_heads=2, num_kv_heads=1)
    card = build_adapter_card(base_model="acme/other-base")
    registry.publish(make_tiny_adapter(other, root / "adapter"), "acme/other-lora", card=card)
    return registry, other


def _tasks_with(tmp_path, name: str, text: str):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(text)
    return folder


CASES = [
    # (id, targets, options, error, text quoted in the message)
    ("unknown-task", ["acme/tiny-dates"], {"tasks": ["dates", "trivia"]}, EvalError, "'trivia'"),
    ("unknown-adapter", ["acme/nope"], {}, AdapterNotFoundError, "'acme/nope'"),
    ("unknown-revision", ["acme/tiny-dates@" + "0" * 40], {}, RevisionNotFoundError, "0000000"),
    ("unknown-alias", ["acme/tiny-dates@prod"], {}, AliasNotFoundError, "prod"),
    ("invalid-name", ["not a name"], {}, InvalidNameError, "'not a name'"),
    ("mixed-bases", ["acme/tiny-dates", "acme/other-lora"], {}, EvalError, "acme/other-base"),
    (
        "other-base",
        ["acme/other-lora"],
        {"base": BASE_ID},
        IncompatibleAdapterError,
        "acme/other-base",
    ),
    ("base-not-published", ["acme/other-lora"], {}, BaseModelNotFoundError, "acme/other-base"),
    ("nothing", [], {}, EvalError, "Nothing to evaluate"),
    ("bad-limit", ["acme/tiny-dates"], {"limit": -3}, ConfigError, "-3"),
    ("bad-backend", ["acme/tiny-dates"], {"backend": "tpu"}, ConfigError, "'tpu'"),
    (
        "endpoint-url",
        ["acme/tiny-dates"],
        {"endpoint": "localhost:8000"},
        ConfigError,
        "'localhost:8000'",
    ),
    ("endpoint-missing", ["acme/tiny-dates"], {"backend": "endpoint"}, ConfigError, "--endpoint"),
    (
        "judge-needs-endpoint",
        ["acme/tiny-dates"],
        {"judge_endpoint": "http://127.0.0.1:9"},
        ConfigError,
        "judge",
    ),
    (
        "bad-data-dir",
        ["acme/tiny-dates"],
        {"data_dir": "/nonexistent/data"},
        ConfigError,
        "/nonexistent/data",
    ),
]


@pytest.mark.parametrize(
    ("targets", "options", "error", "quoted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_targets_and_options(setup, task_data, targets, options, error, quoted):
    from loradock.evals.run import evaluate

    registry, _ = setup
    options.setdefault("data_dir", task_data)
    with pytest.raises(error) as info:
        evaluate(targets, registry=registry, **options)
    assert quoted in str(info.value)


def test_base_folder_that_does_not_fit(setup, task_data):
    """A local base folder has no repo id to compare: the weights' shapes give it away."""
    from loradock.evals.run import evaluate

    registry, other = setup
    with pytest.raises(IncompatibleAdapterError, match="acme/tiny-dates.*shape mismatch"):
        evaluate(["acme/tiny-dates"], base=str(other), registry=registry, data_dir=task_data)


def test_two_bases_in_one_run(setup, task_data, tiny_base):
    from loradock.evals.run import evaluate

    registry, other = setup
    with pytest.raises(EvalError, match="several bases"):
        evaluate([BASE_ID, str(other)], registry=registry, data_dir=task_data)


@pytest.mark.parametrize(
    ("task", "rows", "error", "quoted"),
    [
        ("dates", "", DataError, "is empty"),
        ("extraction", '{"id": 1}\n{oops\n', DataError, "line 2"),
    ],
)
def test_bad_task_data(setup, task_data, tmp_path, task, rows, error, quoted):
    from loradock.evals.run import evaluate

    registry, _ = setup
    data = tmp_path / "data"
    shutil.copytree(task_data, data)
    (data / task / "test.jsonl").write_text(rows)
    with pytest.raises(error) as info:
        evaluate(["acme/tiny-dates"], tasks=[task], registry=registry, data_dir=data)
    assert quoted in str(info.value) and str(data / task) in str(info.value)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("task: dates\ndataset_path: json\n  bad indent: [\n", "Malformed task YAML"),
        ("task: dates\noutput_type: generate_until\n", "missing key 'dataset_path'"),
    ],
)
def test_malformed_task_yaml(setup, task_data, tmp_path, text, quoted):
    from loradock.evals.run import evaluate

    registry, _ = setup
    folder = _tasks_with(tmp_path, "dates", text)
    with pytest.raises(EvalError) as info:
        evaluate(["acme/tiny-dates"], registry=registry, data_dir=task_data, tasks_dir=folder)
    assert quoted in str(info.value) and "dates.yaml" in str(info.value)


def test_cli_prints_the_error_without_traceback(setup, module_home, monkeypatch, capfd):
    """The ``loradock`` script's entry point, in this process: the module's registry and lm-eval's
    task index, read once a session, are at hand (a subprocess would index it again, ~30 s)."""
    import sys

    from loradock import cli

    monkeypatch.setenv("LORADOCK_HOME", str(module_home / "loradock"))  # the setup registry
    monkeypatch.setattr(sys, "argv", ["loradock", "eval", "acme/tiny-dates", "--tasks", "trivia"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capfd.readouterr()  # the file descriptors: whatever lm-eval prints is seen too
    assert info.value.code == 1
    assert "error:" in err and "'trivia'" in err and "Traceback" not in err
    assert out == ""  # stdout stays clean for scripts
