"""Job configs: every shipped YAML loads; bad values are all reported in one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from loradock.errors import ConfigError
from loradock.training.config import JobConfig

JOBS_DIR = Path(__file__).resolve().parents[2] / "training" / "jobs"
SHIPPED = sorted(JOBS_DIR.glob("*.yaml"))


def test_the_shipped_jobs_exist():
    names = {p.name for p in SHIPPED}
    assert {"dates-lora.yaml", "extraction-lora.yaml", "dates-qlora.yaml", "tiny.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_job_loads(path):
    job = JobConfig.from_yaml(path)
    assert job.name and job.publish.repo_id and job.data.task in ("dates", "extraction")
    assert job.data.split_file("train").is_file()
    assert job.source_text == path.read_text()
    # The resolved config round-trips (the card embeds it so the job can be re-run).
    again = JobConfig.from_dict(job.to_dict())
    assert again.to_dict() == job.to_dict()


def test_qlora_job_quantizes_and_default_output_is_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADOCK_HOME", str(tmp_path))
    job = JobConfig.from_yaml(JOBS_DIR / "dates-qlora.yaml")
    assert job.quantization.mode == "nf4"
    assert job.output_dir == tmp_path / "runs" / "dates-qlora"


def test_relative_paths_are_taken_from_the_yaml_folder(tmp_path):
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "job.yaml"
    path.write_text(
        "name: rel\nbase: org/base\ndata: {train: data/train.jsonl}\noutput_dir: out\n"
        "publish: {enabled: false}\n"
    )
    job = JobConfig.from_yaml(path)
    assert job.data.train == str(tmp_path / "jobs" / "data" / "train.jsonl")
    assert job.output_dir == tmp_path / "jobs" / "out"


def _base() -> dict:
    return {
        "name": "j",
        "base": "org/base",
        "data": {"task": "dates"},
        "publish": {"enabled": False},
    }


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"lora": {"r": 0}}, "lora.r=0 must be an integer >= 1"),
        ({"lora": {"r": 2.5}}, "lora.r=2.5"),
        ({"lora": {"lora_dropout": 1.5}}, "lora.lora_dropout=1.5"),
        ({"lora": {"target_modules": []}}, "lora.target_modules=[]"),
        ({"lora": {"target_modules": "attention"}}, "lora.target_modules='attention'"),
        ({"lora": {"rank": 8}}, "lora: unknown key 'rank'"),
        ({"quantization": {"mode": "int8"}}, "quantization.mode='int8'"),
        ({"trainer": {"learning_rate": 0}}, "trainer.learning_rate=0"),
        ({"trainer": {"max_length": -1}}, "trainer.max_length=-1"),
        ({"trainer": {"packing_strategy": "ffd"}}, "trainer.packing_strategy='ffd'"),
        ({"trainer": {"packing": "yes"}}, "trainer.packing='yes' must be true, false or auto"),
        ({"trainer": {"lr_scheduler_type": "step"}}, "trainer.lr_scheduler_type='step'"),
        ({"trainer": {"max_steps": 0}}, "trainer.max_steps=0"),
        ({"trainer": {"report_to": "wandb"}}, "trainer.report_to='wandb'"),
        ({"data": {"task": "weather"}}, "data.task='weather'"),
        ({"data": {}}, "give a shipped `task`, a `train` file"),
        ({"data": {"train": "rows.xlsx"}}, "data.train='rows.xlsx': unsupported file type"),
        ({"data": {"task": "dates", "format": "chat"}}, "data.format='chat'"),
        ({"data": {"hub_id": "not a dataset"}}, "data.hub_id='not a dataset'"),
        ({"base": {"name": ""}}, "base.name=''"),
        ({"base": {"name": "org/b", "dtype": "int4"}}, "base.dtype='int4'"),
        ({"publish": {"enabled": True}}, "publish.repo_id is required"),
        ({"publish": {"repo_id": "no-namespace"}}, "Invalid repo id 'no-namespace'"),
        ({"publish": {"repo_id": "a/b", "aliases": ["Prod!"]}}, "Invalid alias 'Prod!'"),
        ({"eval": {"limit": 0}}, "eval.limit=0"),
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"name": "has space"}, "name='has space'"),
        ({"seed": "x"}, "seed='x' must be an integer"),
        ({"trainer": "fast"}, "trainer: expected a mapping"),
    ],
)
def test_bad_values_are_reported(patch, expected):
    data = _base()
    data.update(patch)
    with pytest.raises(ConfigError) as err:
        JobConfig.from_dict(data)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_all_problems_come_in_one_error():
    data = _base()
    data.update(lora={"r": 0, "lora_dropout": 2}, trainer={"learning_rate": -1}, extra=1)
    del data["base"]
    with pytest.raises(ConfigError) as err:
        JobConfig.from_dict(data)
    text = "\n".join(err.value.problems)
    for expected in ("lora.r=0", "lora.lora_dropout=2", "learning_rate=-1", "'extra'", "'base'"):
        assert expected in text
    assert len(err.value.problems) >= 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "expected a mapping")],
)
def test_bad_yaml_files(tmp_path, text, expected):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        JobConfig.from_yaml(path)


def test_missing_job_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        JobConfig.from_yaml(tmp_path / "nope.yaml")
