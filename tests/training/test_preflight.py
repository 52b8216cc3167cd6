"""Bad jobs fail BEFORE training with one clear ConfigError naming the bad value."""

from __future__ import annotations

import json
import shutil

import pytest

from loradock.errors import ConfigError
from loradock.training.config import JobConfig
from loradock.training.job import run_job


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _case_unknown_target(tmp_path):
    return {"lora": {"target_modules": ["q_proj", "attn_qkv"]}}, "'attn_qkv' is not a module"


def _case_missing_column(tmp_path):
    train = _write_rows(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}] * 3)
    return {"data": {"task": None, "train": train, "format": "instruction"}}, (
        "needs column(s) instruction"
    )


def _case_undetectable_format(tmp_path):
    train = _write_rows(tmp_path / "odd.jsonl", [{"q": "x", "a": "y"}] * 3)
    return {"data": {"task": None, "train": train}}, "cannot tell the data format"


def _case_missing_data_file(tmp_path):
    return {"data": {"train": str(tmp_path / "nowhere.jsonl")}}, "nowhere.jsonl' does not exist"


def _case_empty_data_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    return {"data": {"train": str(tmp_path / "empty.jsonl")}}, "has no rows"


def _case_broken_jsonl(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "answer": "b"}\n{oops\n')
    return {"data": {"train": str(tmp_path / "broken.jsonl")}}, "line 2 is not JSON"


def _case_unknown_base(tmp_path):
    return {"base": {"name": "acme/no-such-base"}}, "base.name='acme/no-such-base'"


def _case_local_base_folder_with_publish(tmp_path):
    return {"base": {"name": "__TINY_FOLDER__"}}, "is a local folder"


def _case_quantized_base(tmp_path):
    return {"base": {"name": "__QUANTIZED__"}, "quantization": {"mode": "nf4"}}, (
        "already quantized (gptq)"
    )


def _case_output_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return {"output_dir": str(blocker / "run")}, "is not writable"


def _case_eval_without_split(tmp_path):
    train = _write_rows(tmp_path / "t.jsonl", [{"instruction": "a", "answer": "b"}] * 3)
    return {"data": {"task": None, "train": train}}, "no test or validation split"


def _case_nothing_left_after_truncation(tmp_path):
    return {"trainer": {"max_length": 16}}, "trainer.max_length=16"


def _case_hub_dataset_while_offline(tmp_path):
    return {"data": {"task": None, "hub_id": "acme/dates"}}, "needs a reachable Hub"


CASES = [
    _case_hub_dataset_while_offline,
    _case_unknown_target,
    _case_missing_column,
    _case_undetectable_format,
    _case_missing_data_file,
    _case_empty_data_file,
    _case_broken_jsonl,
    _case_unknown_base,
    _case_local_base_folder_with_publish,
    _case_quantized_base,
    _case_output_not_writable,
    _case_eval_without_split,
    _case_nothing_left_after_truncation,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.removeprefix("_case_"))
def test_bad_job_fails_before_training(
    make_job, case, tmp_path, tiny_base, tiny_registry_base, registry
):
    patch, expected = case(tmp_path)
    if patch.get("base", {}).get("name") == "__TINY_FOLDER__":
        patch["base"]["name"] = str(tiny_base)
    if patch.get("base", {}).get("name") == "__QUANTIZED__":
        quantized = tmp_path / "quantized-base"
        shutil.copytree(tiny_base, quantized)
        config = json.loads((quantized / "config.json").read_text())
        config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
        (quantized / "config.json").write_text(json.dumps(config))
        patch["base"]["name"] = str(quantized)
        patch["publish"] = {"enabled": False}
    job = JobConfig.from_dict(make_job(**patch))
    with pytest.raises(ConfigError) as err:
        run_job(job, registry=registry, progress=False)
    assert any(expected in p for p in err.value.problems), err.value.problems
    # Nothing trained: no checkpoint, no adapter, nothing published.
    assert not (job.output_dir / "checkpoints").exists() or not any(
        (job.output_dir / "checkpoints").iterdir()
    )
    assert not (job.output_dir / "adapter").exists()
    assert registry.search() == []


def test_several_problems_are_reported_together(make_job, tmp_path, tiny_registry_base, registry):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    job = JobConfig.from_dict(
        make_job(
            lora={"target_modules": ["nope_proj"]},
            data={"train": str(tmp_path / "missing.jsonl")},
            output_dir=str(blocker / "out"),
        )
    )
    with pytest.raises(ConfigError) as err:
        run_job(job, registry=registry, progress=False)
    text = "\n".join(err.value.problems)
    assert "'nope_proj'" in text and "missing.jsonl" in text and "not writable" in text


def test_resume_without_checkpoint_is_refused(make_job, tmp_path, tiny_registry_base, registry):
    job = JobConfig.from_dict(make_job())
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_job(job, resume=True, registry=registry, progress=False)
