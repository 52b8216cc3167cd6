"""The shipped lm-eval task YAMLs: read, validate, and written out with absolute data paths.

The YAMLs in ``evals/tasks/`` name their data relative to their own folder, so they work
from a source checkout and from an installed wheel alike (``evals/`` and ``training/`` are
siblings in both): ``utils.local_dataset`` (their ``custom_dataset``) reads them relative to
its own folder, so plain ``lm_eval --include_path evals/tasks`` works from any directory. Each
loradock run copies the chosen YAMLs (and ``utils.py``) into a temporary include folder with
every data path made absolute and checked first (and ``--data-dir`` applied).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loradock.errors import DataError, EvalError

SHIPPED_TASKS_DIR = Path(__file__).parent / "tasks"
# A data path starting with this prefix is shipped training data; ``data_dir=`` re-roots it.
TRAINING_DATA_PREFIX = "../../training/data/"
OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood", "loglikelihood_rolling")
REQUIRED_KEYS = ("task", "dataset_path", "output_type", "test_split")
TASK_KINDS = ("task", "general", "perplexity")


class FunctionRef(str):
    """A ``!function module.name`` value, kept as a tag so it is written back unchanged."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor(
    "!function", lambda loader, node: FunctionRef(loader.construct_scalar(node))
)
_Dumper.add_representer(
    FunctionRef, lambda dumper, value: dumper.represent_scalar("!function", str(value))
)


@dataclass(frozen=True)
class TaskSpec:
    """One shipped task: its YAML, where its data lives, and how to report it."""

    name: str
    yaml_path: Path
    output_type: str
    dataset: str  # identity written into model-index (``metadata.dataset`` in the YAML)
    kind: str  # "task" (a training task), "general" (forgetting check) or "perplexity"
    data_files: dict[str, Path] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def generative(self) -> bool:
        return self.output_type == "generate_until"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe loader subclass)
    except yaml.YAMLError as exc:
        raise EvalError(
            f"Malformed task YAML {str(path)!r}: {exc}. Fix the file's syntax."
        ) from exc
    if not isinstance(data, dict):
        raise EvalError(
            f"Malformed task YAML {str(path)!r}: expected a mapping of keys (task:, dataset_path:, ...), "
            f"got {type(data).__name__}."
        )
    return data


def _resolve_data_path(raw: str, yaml_dir: Path, data_dir: Path | None) -> Path:
    if data_dir is not None and raw.startswith(TRAINING_DATA_PREFIX):
        return (Path(data_dir) / raw[len(TRAINING_DATA_PREFIX) :]).resolve()
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else yaml_dir / path).resolve()


def _spec_from_yaml(path: Path, data_dir: Path | None) -> TaskSpec:
    config = _read_yaml(path)
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if not config.get(key)]
    output_type = config.get("output_type")
    if output_type and output_type not in OUTPUT_TYPES:
        problems.append(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
    metadata = config.get("metadata") or {}
    if not isinstance(metadata, dict):
        problems.append("metadata must be a mapping")
        metadata = {}
    kind = metadata.get("kind", "task")
    if kind not in TASK_KINDS:
        problems.append(f"metadata.kind {kind!r} is not one of {', '.join(TASK_KINDS)}")
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if not isinstance(files, dict) or not files:
        problems.append("dataset_kwargs.data_files must map split names to local files")
        files = {}
    split = config.get("test_split")
    if files and split and split not in files:
        problems.append(f"test_split {split!r} has no entry in dataset_kwargs.data_files")
    if problems:
        raise EvalError(
            f"Malformed task YAML {str(path)!r}: " + "; ".join(problems) + ". Fix the file."
        )
    data_files = {s: _resolve_data_path(str(p), path.parent, data_dir) for s, p in files.items()}
    return TaskSpec(
        name=str(config["task"]),
        yaml_path=path,
        output_type=str(output_type),
        dataset=str(metadata.get("dataset") or f"local/{config['task']}"),
        kind=kind,
        data_files=data_files,
        config=config,
    )


def load_task_specs(
    tasks_dir: str | Path | None = None, *, data_dir: str | Path | None = None
) -> dict[str, TaskSpec]:
    """Every task YAML in ``tasks_dir`` (the shipped folder by default), by task name."""
    folder = Path(tasks_dir) if tasks_dir else SHIPPED_TASKS_DIR
    if not folder.is_dir():
        raise EvalError(f"Task folder {str(folder)!r} does not exist.")
    specs: dict[str, TaskSpec] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = _spec_from_yaml(path, Path(data_dir) if data_dir else None)
        if spec.name in specs:
            raise EvalError(
                f"Task {spec.name!r} is defined twice: {str(specs[spec.name].yaml_path)!r} "
                f"and {str(path)!r}. Rename one."
            )
        specs[spec.name] = spec
    return specs


def _count_rows(path: Path) -> int:
    if path.suffix == ".jsonl":
        rows = 0
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as exc:
                raise DataError(
                    f"Data file {str(path)!r} line {number} is not JSON ({exc}); fix or remove it."
                ) from exc
            rows += 1
        return rows
    return sum(1 for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip())


def check_data(spec: TaskSpec) -> None:
    """Every data file of ``spec`` exists and holds at least one row."""
    for split, path in spec.data_files.items():
        if not path.is_file():
            hint = (
                "the training data is shipped by loradock.training (training/data/); "
                "pass --data-dir with a folder holding <task>/test.jsonl"
                if spec.kind == "task"
                else "reinstall loradock or point the YAML at an existing file"
            )
            raise DataError(
                f"Data file {str(path)!r} for task {spec.name!r} (split {split!r}) does not exist: {hint}."
            )
        if _count_rows(path) == 0:
            raise DataError(
                f"Data file {str(path)!r} for task {spec.name!r} is empty: it needs at least one row."
            )


def materialize(specs: Iterable[TaskSpec], out_dir: str | Path) -> Path:
    """Write ``specs`` into ``out_dir`` with absolute data paths (checked) for lm-eval's include_path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copied_helpers: set[Path] = set()
    for spec in specs:
        check_data(spec)
        config = dict(spec.config)
        kwargs = dict(config.get("dataset_kwargs") or {})
        kwargs["data_files"] = {split: str(p) for split, p in spec.data_files.items()}
        config["dataset_kwargs"] = kwargs
        (out / spec.yaml_path.name).write_text(
            yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        for helper in spec.yaml_path.parent.glob("*.py"):
            if helper not in copied_helpers:
                shutil.copy2(helper, out / helper.name)
                copied_helpers.add(helper)
    return out
