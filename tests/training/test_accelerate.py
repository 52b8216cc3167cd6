"""The tiny job under ``accelerate launch`` with two CPU processes (DDP over gloo).

Every process trains its share of the batches; only the main one evaluates, writes the card and
publishes, so exactly one revision lands in the registry, and it loads with PEFT.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.processes import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY_JOB = ROOT / "training" / "jobs" / "tiny.yaml"


def _accelerate() -> str:
    found = Path(sys.executable).with_name("accelerate")
    if not found.exists() and shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not installed")
    return str(found) if found.exists() else str(shutil.which("accelerate"))


def _tiny_job(tmp_path: Path) -> Path:
    job = yaml.safe_load(TINY_JOB.read_text())
    job["output_dir"] = str(tmp_path / "run")
    job["trainer"]["max_steps"] = 4
    job["eval"]["limit"] = 2
    path = tmp_path / "tiny-ddp.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _launch(launcher_args: list[str], job: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # two processes on a shared 2-core machine
        "PYTHONPATH": str(ROOT),
    }
    cmd = [_accelerate(), "launch", *launcher_args, "-m", "loradock.training.launch", str(job)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


# DDP: `--multi_gpu` is accelerate's torchrun launcher; on a machine without GPUs each process
# runs on the CPU over gloo. (`--cpu --num_processes 2` starts ONE process: accelerate's simple
# launcher needs mpirun and a hostfile for several CPU processes.)
DDP = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
# The shipped FSDP config as it is. FSDP needs GPUs: on a CPU the trainer runs with use_cpu,
# accelerate then drops the FSDP plugin and trains plain DDP (docs/training.md), which must still
# train both processes together and publish once.
FSDP = ["--config_file", str(ROOT / "training" / "accelerate" / "fsdp.yaml")]


@pytest.mark.parametrize(
    ("launcher", "distributed"),
    [(DDP, "MULTI_CPU"), (FSDP, "MULTI_CPU")],
    ids=["ddp", "fsdp-config-on-cpu"],
)
def test_two_cpu_processes_train_and_publish_once(
    tmp_path, tiny_registry_base, registry, launcher, distributed
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = _tiny_job(tmp_path)
    args = [*launcher, "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    done = _launch(args, job)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # Two processes trained together (one gloo group of two)...
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    train = metrics["train"]
    assert (train["world_size"], train["distributed"], train["global_step"]) == (2, distributed, 4)
    # ...and only rank 0 published: one "published" line, one revision in the registry.
    published = [line for line in done.stdout.splitlines() if line.startswith("published ")]
    assert len(published) == 1, log[-4000:]
    revisions = registry.revisions("local/tiny-dates-lora")
    assert len(revisions) == 1
    resolved = registry.resolve("local/tiny-dates-lora")
    assert published[0] == f"published local/tiny-dates-lora@{resolved.sha}"
    assert (resolved.path / "README.md").is_file()
    base = registry.resolve_base(tiny_registry_base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base.path), resolved.path
    )
    # The saved adapter is the trained one (whole, not a shard): lora_B starts at zero.
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.numel() > 0 for p in lora_b)
    assert any(p.abs().sum() > 0 for p in lora_b)
