"""The model shapes the benches run: a real model's architecture, so framework overhead weighs
what it weighs for a user, or the toy model of the smoke tests.

- ``smollm2``: SmolLM2-135M-Instruct (hidden 576, 30 layers, 9 heads over 3 KV heads, MLP 1536,
  vocabulary 49152): the imported weights when the local hub holds
  ``loradock/SmolLM2-135M-Instruct`` (``loradock base import smollm2``), else random weights
  from its config and tokenizer, shipped in ``bench/shapes/smollm2/``. Speed does not depend on
  the weights' values.
- ``llama-1b``: TinyLlama-1.1B's layers (hidden 2048, 22 layers, 32 heads over 4 KV heads, MLP
  5632, untied head) with SmolLM2's tokenizer and vocabulary (49152, where TinyLlama has 32000:
  the repo ships one tokenizer), random bf16 weights: 1.17 B parameters, 2.3 GB a copy in bf16,
  the largest class a 2-core, 23 GiB machine runs through every row in reasonable time.
- ``toy``: ``loradock.tiny``'s random Llama (hidden 256, 4 layers; hidden 64, 2 layers for
  ``--quick``), where framework overhead is most of the cost: the smoke tests' model.

Adapters follow the shipped training jobs on the real shapes (rank 16, every linear layer),
and the toy's historical ones (rank 8, attention only) on the toy.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

SHAPES_DIR = Path(__file__).parent / "shapes"
SHAPES = ("smollm2", "llama-1b", "toy")
IMPORTED_SMOLLM2 = "loradock/SmolLM2-135M-Instruct"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterShape:
    r: int
    target_modules: tuple[str, ...]


def default_shape(quick: bool) -> str:
    """``toy`` for smoke-test sizes, else SmolLM2-135M's real shape."""
    return "toy" if quick else "smollm2"


def adapter_shape(shape: str) -> AdapterShape:
    if shape == "toy":
        return AdapterShape(8, ("q_proj", "k_proj", "v_proj", "o_proj"))
    return AdapterShape(16, ALL_LINEAR)  # training/jobs/*.yaml: r 16, all-linear


def build_base(shape: str, dest: Path, *, quick: bool = False) -> tuple[Path, str]:
    """A model folder of ``shape`` (written under ``dest`` unless imported weights are used)
    and a description of its weights for the results."""
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")
    if shape == "toy":
        from loradock.tiny import make_tiny_base

        hidden, layers, heads = (64, 2, 2) if quick else (256, 4, 4)
        # Head size 32 (quick) or 64: sizes vLLM's CPU attention supports, for its rows.
        path = make_tiny_base(
            dest,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=heads // 2,
            intermediate_size=hidden * 2,
        )
        return path, f"toy random Llama (hidden {hidden}, {layers} layers)"
    if shape == "smollm2":
        imported = imported_smollm2()
        if imported is not None:
            return imported, f"{IMPORTED_SMOLLM2} (imported weights)"
    return random_base(shape, dest), f"{shape} shape, random weights ({SHAPES_DIR.name}/{shape})"


def imported_smollm2() -> Path | None:
    """The imported SmolLM2-135M-Instruct's folder in the default registry, if it is there."""
    from loradock.errors import LoradockError
    from loradock.registry.api import Registry

    try:
        return Path(Registry.open().resolve_base(IMPORTED_SMOLLM2).path)
    except LoradockError:
        return None


def random_base(shape: str, dest: Path) -> Path:
    """Random weights of ``bench/shapes/<shape>/config.json`` with SmolLM2's tokenizer files."""
    from loradock.tiny import make_random_base

    source = dest.parent / f"{dest.name}-source"
    source.mkdir(parents=True, exist_ok=True)
    for f in (SHAPES_DIR / "smollm2").iterdir():  # the tokenizer, chat template, eos ids
        shutil.copy(f, source / f.name)
    shutil.copy(SHAPES_DIR / shape / "config.json", source / "config.json")
    return make_random_base(source, dest)


def model_config(path: Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
