"""Resuming a training job: after ``kill -9`` it continues from its own last complete
checkpoint; checkpoints of another job or of other settings are refused with every difference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from loradock.errors import ConfigError
from loradock.training.config import JobConfig
from loradock.training.job import run_job
from loradock.training.preflight import preflight
from loradock.training.resume import prepare_checkpoints


def _plan(make_job, registry, **changes):
    trainer = {"max_steps": 4, "save_steps": 2, **changes.pop("trainer", {})}
    job = make_job(trainer=trainer, publish={"enabled": False}, eval={"enabled": False}, **changes)
    return preflight(JobConfig.from_dict(job), registry=registry)


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"name": "other"}, "belong to job 'tiny'"),
        ({"lora": {"r": 4}}, "lora.r: checkpoints trained with 8"),
        ({"trainer": {"learning_rate": 5e-3}}, "trainer.learning_rate"),
        ({"seed": 1}, "seed: checkpoints trained with 0"),
        ({"trainer": {"max_steps": 8, "save_steps": 4, "logging_steps": 2}}, None),
        ({}, None),
    ],
)
def test_resume_accepts_only_checkpoints_of_the_same_job(
    make_job, tiny_registry_base, registry, changes, refused
):
    plan = _plan(make_job, registry)
    folder = plan.config.output_dir / "checkpoints"
    assert prepare_checkpoints(folder, plan, resume=False) is None
    for step, complete in ((2, True), (4, False)):  # step 4: killed while saving
        (folder / f"checkpoint-{step}").mkdir()
        if complete:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    other = _plan(make_job, registry, **changes)
    if refused is None:
        assert prepare_checkpoints(folder, other, resume=True).endswith("checkpoint-2")
        return
    with pytest.raises(ConfigError, match="Cannot resume") as info:
        prepare_checkpoints(folder, other, resume=True)
    assert any(refused in p for p in info.value.problems), info.value.problems


_TRAIN_UNTIL_STEP_4 = textwrap.dedent(
    """
    import json, sys, time
    from transformers import TrainerCallback
    from loradock.registry.api import Registry
    from loradock.training.config import JobConfig
    from loradock.training.job import train
    from loradock.training.session import build_session
    from loradock.training.preflight import preflight

    class StopAfterSaving(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= 4:  # checkpoint-4 is complete: hang until killed
                print("ready", flush=True)
                time.sleep(600)

    job = JobConfig.from_dict(json.loads(sys.argv[1]))
    session = build_session(preflight(job, registry=Registry.open()), progress=False)
    session.trainer.add_callback(StopAfterSaving())
    train(session)
    """
)


@pytest.mark.slow  # a subprocess importing torch, killed at a chosen point
def test_kill_9_mid_run_then_resume_continues_from_the_last_checkpoint(
    make_job, tiny_registry_base, registry
):
    job = make_job(
        trainer={"max_steps": 6, "save_steps": 2},
        publish={"enabled": False},
        eval={"enabled": False},
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_UNTIL_STEP_4, json.dumps(job)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    checkpoints = JobConfig.from_dict(job).output_dir / "checkpoints"
    # As if the kill had come while checkpoint-6 was being written: no trainer_state.json.
    (checkpoints / "checkpoint-6").mkdir()
    (checkpoints / "checkpoint-6" / "adapter_model.safetensors").write_bytes(b"half")
    resumed = run_job(JobConfig.from_dict(job), resume=True, registry=registry, progress=False)
    summary = resumed.metrics["train"]
    assert summary["resumed_from"].endswith("checkpoint-4")
    assert summary["global_step"] == 6
