"""``loradock registry ...`` end to end over a LocalHub: JSON for scripts, errors without tracebacks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loradock import cli
from loradock.registry.card import EvalMetric, build_adapter_card
from tests.helpers.registry import BASE_ID

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(cli.app, ["registry", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def invoke_json(*args: str):
    return json.loads(invoke(*args, "--json"))


@pytest.fixture
def carded_adapter(tmp_path, adapter_dir) -> Path:
    """The tiny adapter with a card naming the base in the store and a dates metric."""
    folder = tmp_path / "carded"
    shutil.copytree(adapter_dir, folder)
    build_adapter_card(
        base_model=BASE_ID,
        task="dates",
        eval_results=[EvalMetric("dates", "acme/dates", "exact_match", 0.75)],
    ).save(folder)
    return folder


@pytest.fixture
def published(registry_with_base, carded_adapter, adapter_dir) -> dict:
    first = invoke_json("publish", str(carded_adapter), "acme/dates-lora", "--alias", "prod")
    second = invoke_json(
        "publish", str(adapter_dir), "acme/json-lora", "--base", BASE_ID, "--task", "json"
    )
    return {"dates": first, "json": second}


def test_publish_search_show_resolve(published):
    assert published["dates"]["aliases"] == ["prod"]
    rows = invoke_json("search", "--task", "dates")
    assert [r["repo_id"] for r in rows] == ["acme/dates-lora"]
    assert rows[0]["metrics"] == {"dates/exact_match": 0.75}
    rows = invoke_json("search", "--base", BASE_ID)
    assert {r["repo_id"] for r in rows} == {"acme/dates-lora", "acme/json-lora"}
    rows = invoke_json("search", "--metric", "dates/exact_match", "--min", "0.7")
    assert [r["repo_id"] for r in rows] == ["acme/dates-lora"]
    assert invoke_json("search", "--metric", "dates/exact_match", "--min", "0.8") == []
    bases = invoke_json("search", "--kind", "base")
    assert BASE_ID in {r["repo_id"] for r in bases}

    shown = invoke_json("show", "acme/dates-lora@prod")
    assert shown["record"]["sha"] == published["dates"]["sha"]
    assert shown["aliases"] == {"prod": published["dates"]["sha"]}
    assert len(shown["revisions"]) == 1

    path = invoke("resolve", f"acme/dates-lora@{published['dates']['sha']}").strip()
    assert (Path(path) / "adapter_config.json").is_file()
    assert invoke_json("resolve", "acme/dates-lora@prod")["path"] == path


def test_tables_for_people(published):
    out = invoke("search", "--sort", "dates/exact_match")
    assert "acme/dates-lora" in out and "0.75" in out
    out = invoke("show", "acme/json-lora")
    assert "revisions of acme/json-lora" in out
    assert "acme/json-lora" in invoke("compatible", BASE_ID)
    assert "Nothing matched" in invoke("search", "--task", "nope")


def test_aliases_set_list_rm(published):
    sha = published["json"]["sha"]
    assert invoke_json("alias", "set", "acme/json-lora", "staging", sha)["sha"] == sha
    assert invoke_json("alias", "list", "acme/json-lora") == {"staging": sha}
    assert invoke_json("show", "acme/json-lora@staging")["record"]["sha"] == sha
    invoke("alias", "rm", "acme/json-lora", "staging")
    assert invoke_json("alias", "list", "acme/json-lora") == {}


def test_compatible_and_sync(published):
    rows = invoke_json("compatible", BASE_ID, "--max-rank", "4")
    assert {r["repo_id"] for r in rows} == {"acme/dates-lora", "acme/json-lora"}
    assert invoke_json("compatible", BASE_ID, "--max-rank", "2") == []
    report = invoke_json("sync")
    assert report["errors"] == [] and report["revisions_added"] == 0
    assert report["repos_seen"] == 4  # two bases, two adapters
    scoped = invoke_json("sync", "--author", "nobody")
    assert scoped["repos_seen"] == 0 and scoped["repos_removed"] == 0
    assert len(invoke_json("search")) == 2  # other namespaces keep their rows


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real entry point (as the `loradock` script runs it): known errors exit 1, no traceback."""
    monkeypatch.setattr(sys, "argv", ["loradock", "registry", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    return info.value.code, captured.out + captured.err


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["show", "acme/missing"], "acme/missing"),
        (["show", "acme/dates-lora@canary"], "canary"),
        (["show", "acme/dates-lora@" + "f" * 40], "f" * 40),
        (["show", "../../etc/passwd"], "../../etc/passwd"),
        (["resolve", "acme/dates-lora@canary"], "canary"),
        (["search", "--metric", "exact_match"], "exact_match"),
        (["search", "--min", "0.5"], "needs a metric"),
        (["search", "--limit", "0"], "limit=0"),
        (["search", "--sort", "best"], "best"),
        (["compatible", BASE_ID, "--max-rank", "0"], "max_rank 0"),
        (["alias", "set", "acme/dates-lora", "PROD!", "main"], "PROD!"),
        (["alias", "rm", "acme/dates-lora", "staging"], "staging"),
        (["alias", "list", "acme/missing"], "acme/missing"),
        (["publish", "/nonexistent/folder", "acme/x"], "/nonexistent/folder"),
    ],
)
def test_bad_input_is_one_clear_line_and_status_1(monkeypatch, capsys, published, args, quoted):
    code, output = run_main(monkeypatch, capsys, *args)
    assert code == 1
    assert quoted in output
    assert "Traceback" not in output


def test_sync_reports_a_broken_repo_and_exits_1(monkeypatch, capsys, published, registry, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    (broken / "README.md").write_text("---\nbase_model: [oops\n---\n")
    registry.store.create_repo("acme/broken")
    registry.store.upload_folder("acme/broken", broken, commit_message="broken")
    code, output = run_main(monkeypatch, capsys, "sync", "--no-progress")
    assert code == 1
    assert "acme/broken" in output and "Traceback" not in output
