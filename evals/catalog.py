"""Which lm-eval tasks one run measures, resolved and loaded before any model is.

A name is a shipped task (``evals/tasks``), a task, group or tag of a ``--include-path``
folder, or anything lm-eval ships (``arc_easy``, ``mmlu``, ...), looked up by lm-eval's own
``TaskManager``. Loading a task reads its data set, so a data set that is neither on disk nor
reachable fails here, naming it, before a model is loaded. lm-eval's thousands of built-in
YAMLs are indexed only when a name is not found in the local folders (it takes seconds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import DataError, EvalError
from loradock.evals.options import EvalOptions
from loradock.evals.results import file_sha256
from loradock.evals.taskdir import TaskSpec, load_task_specs, materialize

# datasets builders that read local files: their data is on disk, never on the Hub.
LOCAL_BUILDERS = frozenset({"json", "csv", "text", "parquet", "arrow", "pandas", "sql"})
SHOWN_DATASETS = 5  # a group such as mmlu needs dozens: the message names the first few


@dataclass(frozen=True)
class TaskInfo:
    """One reported unit: a task named (or expanded from a tag) or a group with its leaves."""

    name: str
    output_types: tuple[str, ...]  # of its leaf tasks
    dataset: str  # identity written into model-index
    kind: str  # "task", "general" (forgetting check) or "perplexity"
    leaves: tuple[str, ...]
    data_hash: str  # shipped: sha256 of the data files; else datasets' fingerprints
    is_group: bool = False

    @property
    def generative(self) -> bool:
        return set(self.output_types) == {"generate_until"}


@dataclass
class TaskSelection:
    """The loaded tasks (lm-eval objects, reused for every target) and what to report."""

    manager: Any  # lm_eval.tasks.TaskManager
    objects: list[Any]  # top-level lm-eval Task / Group objects, in the order asked
    infos: list[TaskInfo]


def requested_names(options: EvalOptions, shipped: Mapping[str, TaskSpec]) -> list[str]:
    """The names to run: ``--tasks`` (the shipped tasks by default) then ``--forgetting``."""
    names = list(options.tasks)
    if not names:
        specs = shipped.values()
        names = [s.name for s in specs if s.generative or options.backend != "endpoint"]
    return list(dict.fromkeys([*names, *options.forgetting]))


def _manager(paths: Sequence[Path], names: Sequence[str]) -> Any:
    from lm_eval.tasks import TaskManager

    include = [str(p) for p in paths]
    local = TaskManager(include_path=include, include_defaults=False)
    if all(n in local.task_index for n in names):
        return local
    full = TaskManager(include_path=include, include_defaults=True)
    unknown = [n for n in names if n not in full.task_index]
    if unknown:
        folders = ", ".join(repr(str(p)) for p in paths[1:]) or "none given"
        raise EvalError(
            f"Unknown task(s) {', '.join(map(repr, unknown))}: not a task, group or tag of "
            f"lm-eval, of the shipped tasks, or of the --include-path folders ({folders}). "
            "List lm-eval's with `lm_eval ls tasks`."
        )
    return full


def _leaf_configs(index: Mapping[str, Any], name: str, depth: int = 0) -> list[dict]:
    """The task configs a name stands for (groups and tags walked), from lm-eval's index."""
    entry = index.get(name)
    if entry is None or depth > 8:
        return []
    kind = entry.kind.name
    if kind == "TAG":
        return [c for n, e in index.items() if name in e.tags for c in _leaf_configs(index, n)]
    if kind != "GROUP":
        return [entry.cfg or {}]
    out: list[dict] = []
    for item in (entry.cfg or {}).get("task") or []:
        if isinstance(item, str):
            out += _leaf_configs(index, item, depth + 1)
        elif isinstance(item, dict) and isinstance(item.get("task"), str):
            found = _leaf_configs(index, item["task"], depth + 1)
            out += [{**c, **item} for c in found] if found else [item]
    return out


def hub_datasets(manager: Any, name: str) -> list[str]:
    """The Hub data sets ``name`` reads, as ``path`` or ``path (config name)``."""
    found = []
    for cfg in _leaf_configs(manager.task_index, name):
        path = cfg.get("dataset_path")
        if not path or path in LOCAL_BUILDERS or cfg.get("custom_dataset"):
            continue
        config = cfg.get("dataset_name")
        found.append(f"{path!r} (config {config!r})" if config else repr(path))
    return list(dict.fromkeys(found))


def _unavailable(name: str, datasets: list[str], exc: BaseException) -> str:
    shown = ", ".join(datasets[:SHOWN_DATASETS])
    if len(datasets) > SHOWN_DATASETS:
        shown += f" and {len(datasets) - SHOWN_DATASETS} more"
    cache = os.environ.get("HF_DATASETS_CACHE") or "~/.cache/huggingface/datasets"
    return (
        f"Task {name!r} needs data set {shown}, which is not available here "
        f"({type(exc).__name__}: {exc}). Make it available: run once with the Hugging Face Hub "
        "reachable (HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset), or point HF_DATASETS_CACHE "
        f"(now {cache}) at a cache that holds it, e.g. one filled by datasets.load_dataset() "
        "on a connected machine."
    )


def _load(manager: Any, name: str) -> dict[str, Any]:
    try:
        return manager.load([name])
    except OSError as exc:  # datasets: ConnectionError offline, FileNotFoundError uncached
        datasets = hub_datasets(manager, name)
        if datasets:
            raise DataError(_unavailable(name, datasets, exc)) from None
        raise DataError(f"lm-eval could not read the data of task {name!r}: {exc}") from None
    except (KeyError, ValueError, TypeError, ImportError, AttributeError) as exc:
        raise EvalError(f"lm-eval could not load task {name!r}: {exc}") from exc


def _fingerprint(task: Any) -> str:
    """datasets' fingerprint of the split lm-eval scores (changes with the data)."""
    config = task.config
    split = config.test_split or config.validation_split
    dataset = getattr(task, "dataset", None)
    try:
        return str(dataset[split]._fingerprint)
    except (KeyError, TypeError, AttributeError):
        return "unknown"


def _spec_hash(spec: TaskSpec) -> str:
    digest = hashlib.sha256()
    for split in sorted(spec.data_files):
        digest.update(file_sha256(spec.data_files[split]).encode())
    return digest.hexdigest()


def _info(name: str, tasks: Sequence[Any], spec: TaskSpec | None, general: bool) -> TaskInfo:
    configs = [t.config for t in tasks]
    paths = sorted({str(c.dataset_path) for c in configs if c.dataset_path})
    if spec is not None:
        dataset, kind, data_hash = spec.dataset, spec.kind, _spec_hash(spec)
    else:
        prints = "".join(sorted(_fingerprint(t) for t in tasks))
        dataset = paths[0] if len(paths) == 1 else name
        kind = "general" if general else "task"
        data_hash = hashlib.sha256(prints.encode()).hexdigest()
    return TaskInfo(
        name=name,
        output_types=tuple(sorted({str(c.output_type) for c in configs})),
        dataset=dataset,
        kind=kind,
        leaves=tuple(t.task_name for t in tasks),
        data_hash=data_hash,
    )


def _resolve(
    manager: Any, names: Sequence[str], shipped: Mapping[str, TaskSpec], forgetting: Sequence[str]
) -> TaskSelection:
    objects: list[Any] = []
    infos: list[TaskInfo] = []
    for name in names:
        loaded = _load(manager, name)
        groups = loaded.get("groups") or {}
        tasks = loaded["tasks"]
        general = name in forgetting
        if name in groups:
            objects.append(groups[name])
            info = _info(name, list(tasks.values()), None, general)
            infos.append(dataclasses.replace(info, is_group=True))
            continue
        for task_name, task in tasks.items():  # a task, or the tasks a tag stands for
            objects.append(task)
            infos.append(_info(task_name, [task], shipped.get(task_name), general))
    return TaskSelection(manager=manager, objects=objects, infos=infos)


@contextmanager
def select_tasks(options: EvalOptions) -> Iterator[TaskSelection]:
    """Resolve and load the run's tasks (data read, nothing evaluated)."""
    specs = load_task_specs(options.tasks_dir, data_dir=options.data_dir)
    names = requested_names(options, specs)
    with tempfile.TemporaryDirectory(prefix="loradock-eval-tasks-") as tmp:
        # The shipped YAMLs, with absolute, checked data paths (--data-dir re-roots them).
        include = materialize([s for n, s in specs.items() if n in names], tmp)
        manager = _manager([include, *options.include_paths], names)
        own = {n: s for n, s in specs.items() if _is_shipped(manager, n, include)}
        yield _resolve(manager, names, own, options.forgetting)


def _is_shipped(manager: Any, name: str, include: Path) -> bool:
    """``name`` comes from the shipped folder (a --include-path task may shadow it)."""
    entry = manager.task_index.get(name)
    path = getattr(entry, "yaml_path", None)
    return path is not None and Path(path).parent == Path(include)
