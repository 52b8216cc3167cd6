"""``loradock train`` and ``loradock merge`` through the CLI, on the shipped tiny job."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from loradock.cli import app
from loradock.errors import ConfigError

TINY_JOB = Path(__file__).resolve().parents[2] / "training" / "jobs" / "tiny.yaml"


def test_train_then_merge_the_shipped_tiny_job(tmp_path, tiny_registry_base, registry):
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", str(TINY_JOB), "--output-dir", str(tmp_path / "run"), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["repo_id"] == "local/tiny-dates-lora" and len(out["sha"]) == 40
    assert out["metrics"]["train"]["global_step"] == 6
    assert registry.resolve("local/tiny-dates-lora").sha == out["sha"]

    merged = runner.invoke(app, ["merge", f"local/tiny-dates-lora@{out['sha']}", "--json"])
    assert merged.exit_code == 0, merged.output
    info = json.loads(merged.stdout)
    assert info["repo_id"] == "local/tiny-dates-lora-merged" and info["kind"] == "merge"
    check = info["check"]
    assert check["decided_agreement"] >= check["min_token_agreement"] and check["probe"].startswith(
        "dates"
    )


def test_a_bad_job_is_a_config_error_before_anything_runs(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text("name: bad\nbase: local/nope\ndata: {task: dates}\nlora: {r: 0}\n")
    result = CliRunner().invoke(app, ["train", str(job)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "lora.r=0" in str(result.exception)
