"""Registries and adapter folders for tests: one opener, one adapter clone, one carded copy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

# The bases the registry tests publish (tests/registry/conftest.py) and the eval tests use.
BASE_ID = "acme/tiny-base"
NARROW_BASE_ID = "acme/tiny-base-narrow"  # same architecture, hidden size 32 instead of 64

if TYPE_CHECKING:
    from loradock.registry.api import Registry


def open_registry(root: Path | None = None) -> Registry:
    """A registry over a LocalHub whose hub, index and snapshots live under ``root``; without
    ``root``, where this test's settings put them (``LORADOCK_HOME``, a fresh folder per test)."""
    from loradock.registry.api import Registry
    from loradock.settings import Settings

    if root is None:
        return Registry.open()
    return Registry.open(
        Settings(
            home=root,
            hub_dir=root / "hub",
            index_path=root / "index.sqlite",
            cache_dir=root / "snapshots",
        )
    )


def clone_adapter(src: Path, dst: Path, seed: int) -> Path:
    """A new adapter with the same shapes as ``src`` and its own random weights (fast: no
    model is built)."""
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "adapter_model.safetensors" and f.is_file():
            shutil.copy(f, dst / f.name)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    out = {
        k: torch.randn(v.shape, generator=gen, dtype=torch.float32) * 0.5
        for k, v in tensors.items()
    }
    save_file(out, str(dst / "adapter_model.safetensors"))
    return dst


def carded_copy(folder: Path, adapter_dir: Path, name: str, *, base: str, task: str) -> Path:
    """A copy of ``adapter_dir`` at ``folder / name`` with a card naming ``base`` and ``task``."""
    from loradock.registry.card import build_adapter_card

    out = folder / name
    shutil.copytree(adapter_dir, out)
    build_adapter_card(base_model=base, task=task).save(out)
    return out
