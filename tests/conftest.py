"""Shared fixtures: every cache in a temporary folder, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.gpu import gpu_test_device
from tests.helpers.registry import open_registry

# Set before anything imports huggingface_hub/transformers: no test may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda() or gpu_test_device() != "cuda":
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def isolated_caches(request, tmp_path_factory, monkeypatch) -> Path:
    """Point every cache loradock and Hugging Face libraries use at a fresh temporary folder."""
    root = tmp_path_factory.mktemp("home")
    env = {
        "LORADOCK_HOME": root / "loradock",
        "HF_HOME": root / "hf",
        "HF_HUB_CACHE": root / "hf" / "hub",
        "HF_DATASETS_CACHE": root / "hf" / "datasets",
        "TRANSFORMERS_CACHE": root / "hf" / "transformers",
        "MPLCONFIGDIR": root / "mpl",
        "XDG_CACHE_HOME": root / "xdg",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    for key in ("LORADOCK_HUB", "LORADOCK_INDEX", "LORADOCK_CACHE", "LORADOCK_STORE", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    # CPU first: on a machine with a GPU the unmarked tests still run on the CPU (their figures,
    # dtypes and tolerances are the CPU's); tests marked ``gpu`` choose their device themselves.
    if "gpu" in request.node.keywords:
        monkeypatch.setenv("LORADOCK_DEVICE", gpu_test_device())
    else:
        monkeypatch.setenv("LORADOCK_DEVICE", "cpu")
    return root


@pytest.fixture
def registry(isolated_caches):
    """A registry over empty stores under this test's LORADOCK_HOME."""
    return open_registry()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random-weight Llama model folder (with tokenizer), built once per session."""
    from loradock.tiny import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("tiny-base") / "model")


@pytest.fixture(scope="session")
def tiny_adapter_factory(tmp_path_factory, tiny_base):
    """Build tiny LoRA adapters for ``tiny_base``: ``factory(seed=1, r=4, target_modules=...)``."""
    from loradock.tiny import make_tiny_adapter

    made: dict[tuple, Path] = {}

    def factory(*, seed: int = 1, r: int = 4, target_modules=("q_proj", "v_proj")) -> Path:
        key = (
            seed,
            r,
            tuple(target_modules) if not isinstance(target_modules, str) else target_modules,
        )
        if key not in made:
            out = tmp_path_factory.mktemp(f"adapter-{seed}-{r}")
            made[key] = make_tiny_adapter(
                tiny_base, out, r=r, seed=seed, target_modules=target_modules
            )
        return made[key]

    return factory
