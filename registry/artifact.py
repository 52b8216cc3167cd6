"""The adapter artifact: PEFT's files, read and checked without importing torch.

An adapter is ``adapter_config.json`` + ``adapter_model.safetensors`` (+ the card). The
safetensors file is checked from its header alone: 8 bytes of little-endian header length,
a JSON header naming each tensor's dtype, shape and byte range, then the data. A header that
does not parse, byte ranges that overlap the header or run past the end, or a file whose
length differs from what the header promises (a truncated upload) are all refused here,
before anything tries to load the weights.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradock.errors import ArtifactError, UnsafeArtifactError

CONFIG_FILENAME = "adapter_config.json"
WEIGHTS_FILENAME = "adapter_model.safetensors"
PICKLE_FILENAME = "adapter_model.bin"
# A header larger than this is not a PEFT adapter (safetensors itself caps headers at 100 MB).
MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" -> module path + role.
_LORA_TENSOR_RE = re.compile(
    r"(?:base_model\.model\.)?(?P<module>.+?)\.(?P<role>lora_[A-Za-z_]+|lora_magnitude_vector)"
    r"(?:\.[A-Za-z0-9_]+)?\.(?:weight|bias)"
)
_LAYER_RE = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LoraModule:
    """One base module the adapter changes, with the shapes its LoRA matrices imply."""

    path: str  # module path in the base model, e.g. "model.layers.0.self_attn.q_proj"
    rank: int
    in_features: int | None
    out_features: int | None

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class AdapterArtifact:
    """What an adapter folder holds, validated."""

    folder: Path
    peft_type: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str | None  # adapter_config's base_model_name_or_path
    modules_to_save: tuple[str, ...]
    rank_pattern: dict[str, int]
    size_bytes: int
    files: tuple[str, ...]
    weights_file: str
    tensors: dict[str, TensorInfo] = field(repr=False)
    config: dict[str, Any] = field(repr=False)

    @property
    def task_type(self) -> str | None:
        return self.config.get("task_type")

    @property
    def max_rank(self) -> int:
        """The largest rank of any module (``rank_pattern`` can raise it above ``r``): from the
        weights when they were read, else (a config alone, a pickle) from the config."""
        if self.tensors:
            ranks = [m.rank for m in self.lora_modules()]
        else:
            ranks = [v for v in self.rank_pattern.values() if isinstance(v, int)]
        return max([self.rank, *ranks])

    def lora_modules(self) -> list[LoraModule]:
        """Each changed module with its rank and in/out sizes, from the tensor shapes."""
        found: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, info in self.tensors.items():
            m = _LORA_TENSOR_RE.fullmatch(name)
            if m:
                found.setdefault(m["module"], {})[m["role"]] = info.shape
        out = []
        for path, roles in sorted(found.items()):
            a, b = roles.get("lora_A"), roles.get("lora_B")
            emb_a, emb_b = roles.get("lora_embedding_A"), roles.get("lora_embedding_B")
            if a is not None and len(a) == 2:
                rank, in_f = a
                out_f = b[0] if b is not None and len(b) == 2 else None
            elif emb_a is not None and len(emb_a) == 2:
                rank, in_f = emb_a  # embedding LoRA: A is (r, vocab)
                out_f = emb_b[0] if emb_b is not None and len(emb_b) == 2 else None
            else:
                continue
            out.append(LoraModule(path, int(rank), int(in_f), out_f))
        return out

    def layer_indices(self) -> set[int]:
        return {int(m.group(1)) for p in self.tensors if (m := _LAYER_RE.search(f".{p}"))}

    def extra_tensors(self) -> list[str]:
        """Tensors that are not LoRA matrices: full copies of modules (``modules_to_save``,
        resized embeddings or heads)."""
        return [n for n in self.tensors if not _LORA_TENSOR_RE.fullmatch(n)]


def read_adapter(folder: str | Path, *, allow_pickle: bool = False) -> AdapterArtifact:
    """Read and validate a PEFT adapter folder; raises ``ArtifactError`` saying what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"Adapter folder {str(folder)!r} does not exist or is not a folder.")
    config_path = folder / CONFIG_FILENAME
    if not config_path.is_file():
        raise ArtifactError(
            f"No {CONFIG_FILENAME} in {str(folder)!r}: not a PEFT adapter folder "
            "(save it with PeftModel.save_pretrained)."
        )
    config = _read_config(config_path)

    weights = folder / WEIGHTS_FILENAME
    tensors: dict[str, TensorInfo]
    if weights.is_file():
        tensors = read_safetensors_header(weights)
        weights_file = WEIGHTS_FILENAME
    elif (folder / PICKLE_FILENAME).is_file():
        if not allow_pickle:
            raise UnsafeArtifactError(
                f"{str(folder / PICKLE_FILENAME)!r} is a pickle file, which can run code when "
                "loaded; it was refused. Re-save the adapter with safe_serialization=True "
                "(adapter_model.safetensors), or pass allow_pickle=True if you trust it."
            )
        tensors = {}  # a pickle's contents cannot be inspected without loading it
        weights_file = PICKLE_FILENAME
    else:
        raise ArtifactError(
            f"No weights in {str(folder)!r}: expected {WEIGHTS_FILENAME!r} next to {CONFIG_FILENAME}."
        )

    files = tuple(
        sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    )
    size = sum((folder / f).stat().st_size for f in files)
    return _artifact(folder, config, config_path, tensors, weights_file, files, size)


def read_adapter_config(folder: str | Path) -> AdapterArtifact:
    """The artifact as far as ``adapter_config.json`` alone tells it (no weights read, no
    tensors): what is checked before an adapter's weights are downloaded."""
    folder = Path(folder)
    config_path = folder / CONFIG_FILENAME
    if not config_path.is_file():
        raise ArtifactError(f"No {CONFIG_FILENAME} in {str(folder)!r}: not a PEFT adapter folder.")
    config = _read_config(config_path)
    size = config_path.stat().st_size
    return _artifact(folder, config, config_path, {}, WEIGHTS_FILENAME, (CONFIG_FILENAME,), size)


def _artifact(
    folder: Path,
    config: dict[str, Any],
    config_path: Path,
    tensors: dict[str, TensorInfo],
    weights_file: str,
    files: tuple[str, ...],
    size: int,
) -> AdapterArtifact:
    return AdapterArtifact(
        folder=folder,
        peft_type=str(config.get("peft_type") or "").upper(),
        rank=_int(config, "r", 8, config_path),
        alpha=_float(config, "lora_alpha", 8.0, config_path),
        target_modules=_target_modules(config.get("target_modules"), tensors),
        base_model=config.get("base_model_name_or_path"),
        modules_to_save=tuple(config.get("modules_to_save") or ()),
        rank_pattern=_rank_pattern(config.get("rank_pattern"), config_path),
        size_bytes=size,
        files=files,
        weights_file=weights_file,
        tensors=tensors,
        config=config,
    )


def read_safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Tensor names -> dtype/shape from a safetensors header, checking the file is complete."""
    path = Path(path)
    size = path.stat().st_size
    where = repr(str(path))
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ArtifactError(f"{where} is truncated ({size} bytes): not a safetensors file.")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise ArtifactError(
                f"{where} is corrupt or truncated: its header claims {header_len} bytes but the "
                f"file has {size}. Re-save or re-download the adapter."
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(
                f"{where} has a corrupt header: {exc}. Re-save or re-download the adapter."
            ) from None
    if not isinstance(header, dict):
        raise ArtifactError(
            f"{where} has a corrupt header (not a JSON object). Re-save or re-download the adapter."
        )

    tensors: dict[str, TensorInfo] = {}
    data_len = size - 8 - header_len
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = str(entry["dtype"]), tuple(int(x) for x in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(
                f"{where}: tensor {name!r} has a malformed header entry. Re-save the adapter."
            ) from None
        expected = math.prod(shape) * _DTYPE_BYTES.get(dtype, 0)
        if dtype in _DTYPE_BYTES and end - start != expected:
            raise ArtifactError(
                f"{where}: tensor {name!r} ({dtype} {list(shape)}) spans {end - start} bytes, "
                f"expected {expected}: the file is corrupt."
            )
        if not 0 <= start <= end:
            raise ArtifactError(
                f"{where}: tensor {name!r} has invalid offsets {[start, end]}. Re-save the adapter."
            )
        end_max = max(end_max, end)
        tensors[name] = TensorInfo(dtype, shape)
    if end_max != data_len:
        raise ArtifactError(
            f"{where} is truncated or corrupt: its header describes {end_max} bytes of tensor "
            f"data but the file holds {data_len}. Re-save or re-download the adapter."
        )
    return tensors


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(path)!r} is not valid JSON: {exc}.") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{str(path)!r} must hold a JSON object, got {type(config).__name__}.")
    if not config.get("peft_type"):
        raise ArtifactError(f"{str(path)!r} has no 'peft_type': not a PEFT adapter config.")
    return config


def _int(config: dict, key: str, default: int, path: Path) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArtifactError(f"{str(path)!r}: {key}={value!r} must be a positive integer.")
    return value


def _float(config: dict, key: str, default: float, path: Path) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(f"{str(path)!r}: {key}={value!r} must be a finite number.")
    return float(value)


def _rank_pattern(raw: Any, path: Path) -> dict[str, int]:
    pattern = raw or {}
    if not isinstance(pattern, dict) or any(
        isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in pattern.values()
    ):
        raise ArtifactError(
            f"{str(path)!r}: rank_pattern={raw!r:.200} must map module names to positive ranks."
        )
    return dict(pattern)


def _target_modules(raw: Any, tensors: dict[str, TensorInfo]) -> tuple[str, ...]:
    """The config's list, sorted; for a pattern ("all-linear", a regex) the module names the
    weights actually change, which is what callers want to know."""
    if isinstance(raw, list | tuple | set):
        # PEFT may record full module paths ("model.layers.0.mlp.up_proj"); keep the names.
        return tuple(sorted({str(x).rsplit(".", 1)[-1] for x in raw}))
    names = {m["module"].rsplit(".", 1)[-1] for n in tensors if (m := _LORA_TENSOR_RE.fullmatch(n))}
    if names:
        return tuple(sorted(names))
    return (str(raw),) if raw else ()
