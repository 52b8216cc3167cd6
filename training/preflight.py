"""Everything a job needs from the outside world, checked before a single training step.

:func:`preflight` resolves the base model, reads the data, matches the LoRA target modules
against the model's real module names, checks quantization and the output folder, and raises
ONE ``ConfigError`` listing every problem; on success it returns a :class:`JobPlan`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError, LoradockError
from loradock.training.config import JobConfig
from loradock.training.data import JobData, load_job_data


@dataclass
class JobPlan:
    """A job checked against the world: where its base is, its data, the hardware choices."""

    config: JobConfig
    base_path: Path
    base_repo_id: str | None
    base_revision: str | None
    data: JobData
    device: str
    dtype_name: str
    bf16: bool

    @property
    def weights_dtype(self) -> str:
        """Non-quantized weights: fp32 on a CPU (bf16 autocast does the fast part; measured
        faster than bf16 weights there), the compute dtype on a GPU."""
        if self.device == "cpu" and self.bf16:
            return "float32"
        return self.dtype_name

    @property
    def base_model_id(self) -> str:
        """How cards and adapter configs name the base: its repo id, else its folder."""
        return self.base_repo_id or str(self.base_path)


def _module_names(base_path: Path) -> tuple[set[str], set[str], dict[str, Any]]:
    """Every module name and every ``nn.Linear`` suffix of the base, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((base_path / "config.json").read_text())
    config = AutoConfig.from_pretrained(str(base_path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = {n for n, _ in model.named_modules() if n}
    linear = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    return names, linear, raw


def _check_targets(targets: list[str] | str, names: set[str], linear: set[str]) -> list[str]:
    if isinstance(targets, str):  # all-linear
        return [] if linear else ["lora.target_modules='all-linear': the base has no Linear layers"]
    problems = []
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            problems.append(
                f"lora.target_modules: {target!r} is not a module of the base model; "
                f"its linear layers are {', '.join(sorted(linear))}"
            )
    return problems


def _check_quantization(config: JobConfig, raw_config: dict[str, Any], device: str) -> list[str]:
    if not config.quantization.enabled:
        return []
    problems = []
    existing = raw_config.get("quantization_config")
    if existing:
        method = existing.get("quant_method", "unknown") if isinstance(existing, dict) else existing
        problems.append(
            f"quantization.mode='nf4': the base model is already quantized ({method}); "
            "QLoRA needs an unquantized base (bf16/fp16/fp32 weights). Use quantization: none."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        problems.append("quantization.mode='nf4' needs bitsandbytes: pip install 'loradock[train]'")
    if not (device == "cpu" or device.startswith("cuda") or device.startswith("xpu")):
        problems.append(f"quantization.mode='nf4' is not supported on device {device!r}")
    return problems


def _check_output_dir(path: Path) -> list[str]:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return [
            f"output_dir={str(path)!r} is not writable ({exc.strerror or exc}): choose another folder"
        ]
    return []


def preflight(config: JobConfig, *, registry: Any = None) -> JobPlan:
    """Check the job against the world and return its plan, or raise one ``ConfigError``."""
    from loradock.modeling import pick_device, pick_dtype

    problems: list[str] = []
    base_path: Path | None = None
    base_repo_id = base_revision = None
    try:
        if registry is None:
            from loradock.registry.api import Registry

            registry = Registry.open()
        resolved = registry.resolve_base(config.base.reference)
        base_path = Path(resolved.path)
        base_repo_id, base_revision = resolved.repo_id, resolved.sha
    except LoradockError as exc:
        problems.append(
            f"base.name={config.base.name!r}: no such base model in the registry or on disk ({exc}). "
            "Import it with `loradock base import` or give a model folder."
        )
    if base_path is not None and base_repo_id is None and config.publish.enabled:
        problems.append(
            f"base.name={config.base.name!r} is a local folder: a published adapter's card names "
            "its base by repo id, so import the base first (`loradock base import`) and use its "
            "id, or set publish.enabled: false"
        )
    device = pick_device()
    dtype = pick_dtype(device, config.base.dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    if base_path is not None:
        if not (base_path / "config.json").is_file():
            problems.append(f"base model folder {str(base_path)!r} has no config.json")
        else:
            names, linear, raw = _module_names(base_path)
            problems += _check_targets(config.lora.target_modules, names, linear)
            problems += _check_quantization(config, raw, device)
    data = load_job_data(config.data, problems)
    if config.eval.enabled and data is not None and data.test is None and data.validation is None:
        problems.append("eval.enabled: the data has no test or validation split to evaluate on")
    problems += _check_output_dir(config.output_dir)
    if problems:
        raise ConfigError(f"Training job {config.name!r} cannot start", problems)
    bf16_setting = config.trainer.bf16
    bf16 = dtype_name == "bfloat16" if bf16_setting == "auto" else bool(bf16_setting)
    assert base_path is not None and data is not None
    return JobPlan(
        config=config,
        base_path=base_path,
        base_repo_id=base_repo_id,
        base_revision=base_revision,
        data=data,
        device=device,
        dtype_name=dtype_name,
        bf16=bf16,
    )
