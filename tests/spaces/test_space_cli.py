"""``loradock space deploy`` uploads exactly the Space's files as a Space repo."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loradock.cli import app as cli
from loradock.errors import ConfigError, InvalidNameError, ProblemsError
from loradock.settings import get_settings
from loradock.spaces.deploy import SPACE_FILES, deploy_space, stage_space

runner = CliRunner()


def test_deploy_to_the_local_hub_makes_a_space_repo_with_the_space_files():
    result = runner.invoke(cli, ["space", "deploy", "--repo", "acme/arena", "--json"])
    assert result.exit_code == 0, result.output
    commit = json.loads(result.stdout)
    assert commit["repo_id"] == "acme/arena" and len(commit["sha"]) == 40

    repo = get_settings().hub_dir / "spaces" / "acme" / "arena"
    assert (repo / "repo.json").is_file()
    record = json.loads((repo / "commits" / f"{commit['sha']}.json").read_text())
    assert sorted(record["files"]) == sorted(SPACE_FILES)
    assert not (get_settings().hub_dir / "models" / "acme" / "arena").exists()  # not a model

    again = runner.invoke(cli, ["space", "deploy", "--repo", "acme/arena", "--json"])
    assert json.loads(again.stdout)["sha"] == commit["sha"]  # nothing changed: no new commit


class RecordingStore:
    name = "recording"

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, repo_id, folder, **kw):
        files = sorted(p.name for p in folder.iterdir())
        self.calls.append(("upload_folder", repo_id, files, kw))
        return "commit"


def test_deploy_asks_the_store_for_a_space_repo():
    store = RecordingStore()
    assert deploy_space("acme/arena", store=store, private=True) == "commit"
    (create, upload) = store.calls
    assert create == (
        "create_repo",
        "acme/arena",
        {"private": True, "exist_ok": True, "repo_type": "space"},
    )
    assert upload[2] == sorted(SPACE_FILES) and upload[3]["repo_type"] == "space"


@pytest.mark.parametrize("repo", ["no-slash", "a/b/c", "../evil", "acme/", "acme/bad name"])
def test_deploy_refuses_bad_repo_ids(repo):
    store = RecordingStore()
    with pytest.raises(InvalidNameError, match="repo"):
        deploy_space(repo, store=store)
    assert store.calls == []


def test_bad_repo_id_on_the_command_line_is_one_readable_line():
    result = runner.invoke(cli, ["space", "deploy", "--repo", "a/b/c"])
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidNameError)


def test_staging_an_incomplete_space_lists_every_missing_file(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("")
    with pytest.raises(ProblemsError) as info:
        stage_space(tmp_path / "out", source=tmp_path / "src")
    assert "README.md" in info.value.problems and "app.py" not in info.value.problems
    assert len(info.value.problems) == len(SPACE_FILES) - 1


def test_run_builds_the_app_with_the_options_and_launches_it(tmp_path, monkeypatch):
    import gradio as gr

    launched = {}

    def fake_launch(self, **kwargs):
        launched.update(kwargs, blocks=self)

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    db = tmp_path / "votes.sqlite"
    args = ["space", "run", "--endpoint", "http://127.0.0.1:9", "--arena-db", str(db)]
    result = runner.invoke(cli, [*args, "--host", "127.0.0.1", "--port", "7999"])
    assert result.exit_code == 0, result.output
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7999
    assert isinstance(launched["blocks"], gr.Blocks)
    assert db.is_file()  # the arena store was opened where asked


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--votes-per-session", "0"], "positive whole number"),
        (["--lock-endpoint", "--trusted-endpoint", "http://other:8000"], "set one of them"),
        (["--endpoint", "http://user:pw@host:8000"], "user name"),
        (["--trusted-endpoint", "ftp://host"], "not an http"),
    ],
)
def test_space_run_refuses_settings_that_cannot_work(args, phrase):
    result = runner.invoke(cli, ["space", "run", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)  # the CLI prints it as its message alone
    assert phrase in str(result.exception)
