"""Fixtures for the eval tests: a registry holding a tiny base and two adapters on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.evals import publish_tiny


@pytest.fixture
def published(registry, tiny_base, tiny_adapter_factory) -> dict[str, str]:
    return publish_tiny(registry, tiny_base, tiny_adapter_factory)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """A registry home shared by one module's tests (for work done once per module)."""
    home = tmp_path_factory.mktemp("evals-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORADOCK_HOME", str(home / "loradock"))
        mp.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
        mp.setenv("MPLCONFIGDIR", str(home / "mpl"))
        for key in ("LORADOCK_HUB", "LORADOCK_INDEX", "LORADOCK_CACHE", "LORADOCK_STORE"):
            mp.delenv(key, raising=False)
        yield home


@pytest.fixture(scope="session")
def task_data(tmp_path_factory) -> Path:
    """A small stand-in for training/data (same row shape), so tests never depend on its size."""
    root = tmp_path_factory.mktemp("task-data")
    (root / "dates").mkdir()
    (root / "extraction").mkdir()
    dates = [
        {
            "id": f"d{i}",
            "instruction": f"Rewrite in ISO format: {i + 1} March 2024",
            "answer": f"2024-03-{i + 1:02d}",
        }
        for i in range(4)
    ]
    records = [
        {
            "id": f"e{i}",
            "instruction": f"Extract name, city, year: Ada Byron moved to London in {1830 + i}.",
            "answer": json.dumps({"name": "Ada Byron", "city": "London", "year": 1830 + i}),
        }
        for i in range(4)
    ]
    for task, rows in (("dates", dates), ("extraction", records)):
        (root / task / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a loaded 2-core machine spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def lm_eval_builtin_index_once():
    """lm-eval's built-in tasks (thousands of YAML files, tens of seconds to read) are indexed
    once per session: every ``TaskManager`` that includes them reuses that index, and the
    folders given after them are indexed each time, overriding it as lm-eval merges them."""
    try:
        import lm_eval.tasks
        from lm_eval.tasks._index import TaskIndex
    except ImportError:  # another lm-eval layout: index as it does
        yield
        return
    builtin = Path(lm_eval.tasks.__file__).parent
    real = TaskIndex.build
    cache: dict[bool, dict] = {}

    def build(paths, *, resolve_includes=True):
        paths = [Path(p) for p in paths]
        if not paths or paths[0] != builtin:
            return real(paths, resolve_includes=resolve_includes)
        if resolve_includes not in cache:
            cache[resolve_includes] = real([builtin], resolve_includes=resolve_includes)
        return {**cache[resolve_includes], **real(paths[1:], resolve_includes=resolve_includes)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TaskIndex, "build", staticmethod(build))
        yield
