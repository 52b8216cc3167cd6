"""Can this adapter be attached to this base? One answer listing every reason it cannot.

The base is known by its ``config.json`` alone: the module tree is built on the ``meta``
device (no weights, no memory) and cached per config, then every LoRA matrix in the adapter
is matched against the module it targets (does it exist, do its in/out sizes agree). This
catches a different architecture, hidden size or layer count without loading a tensor.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import ArtifactError, IncompatibleAdapterError
from loradock.registry.artifact import AdapterArtifact, read_adapter
from loradock.registry.names import REPO_ID_RE

SUPPORTED_PEFT_TYPES = ("LORA",)
# A string target_modules: longer patterns are refused, and matching gets this long in all.
MAX_PATTERN_CHARS = 512
MATCH_BUDGET_S = 0.5
# Whole-module copies serving stacks (PEFT hot-swap, vLLM) cannot swap per request.
_EMBEDDING_NAMES = ("embed_tokens", "lm_head", "wte", "embed_in", "embed_out", "word_embeddings")


@dataclass(frozen=True)
class BaseModules:
    """The linear-like modules of a base architecture: path -> (in_features, out_features)."""

    architecture: str
    modules: dict[str, tuple[int | None, int | None]]
    num_layers: int | None
    hidden_size: int | None
    vocab_size: int | None

    def names(self) -> set[str]:
        return {p.rsplit(".", 1)[-1] for p in self.modules}


_CACHE: dict[str, BaseModules] = {}
_CACHE_LOCK = threading.Lock()


def check_compatibility(
    adapter_folder: str | Path | AdapterArtifact,
    base: Any,
    *,
    max_rank: int | None = None,
    allow_pickle: bool = False,
    base_id: str | None = None,
) -> None:
    """Raise ``IncompatibleAdapterError`` listing every problem, or return ``None``.

    ``base`` is a model folder (with ``config.json``), a config dict, a transformers
    ``PretrainedConfig``, or a resolved model (anything with ``.path`` and ``.repo_id``).
    ``base_id`` (or the resolved model's repo id) is compared with the base the adapter
    names, when both are Hub ids.
    """
    problems: list[str] = []
    artifact = _artifact_or_problem(adapter_folder, allow_pickle, problems)
    config, known_id = _base_config(base, problems)
    base_id = base_id or known_id
    # A quantized copy of a model (its card: base_model_relation "quantized") takes the
    # adapters made for that model.
    card = getattr(base, "card", None)
    same_as = {base_id} if base_id else set()
    if getattr(card, "base_model_relation", None) == "quantized" and card.base_model:
        same_as.add(card.base_model)
    if artifact is not None:
        problems += adapter_problems(artifact, max_rank=max_rank)
        if config is not None:
            problems += _base_problems(artifact, config, base_id, same_as)
    if problems:
        name = artifact.folder if artifact is not None else adapter_folder
        raise IncompatibleAdapterError(f"Adapter {str(name)!r} does not fit its base", problems)


def adapter_problems(artifact: AdapterArtifact, *, max_rank: int | None = None) -> list[str]:
    """Problems that need no base model: PEFT type, rank limit, whole-module copies."""
    problems = []
    if artifact.peft_type not in SUPPORTED_PEFT_TYPES:
        problems.append(
            f"peft_type {artifact.peft_type!r} is not supported: only LoRA adapters "
            "(peft_type 'LORA') can be served"
        )
    if artifact.peft_type == "LORA" and artifact.tensors and not artifact.lora_modules():
        problems.append(
            f"{artifact.weights_file!r} holds no LoRA matrices (no '*.lora_A.weight' tensors): "
            "not a LoRA adapter's weights"
        )
    if max_rank is not None and artifact.max_rank > max_rank:
        problems.append(
            f"rank {artifact.max_rank} is over the limit of {max_rank}: retrain with r<={max_rank} "
            "or raise the server's max rank"
        )
    if artifact.modules_to_save:
        problems.append(
            f"modules_to_save={list(artifact.modules_to_save)!r}: the adapter carries full copies "
            "of modules, which cannot be swapped per request; retrain without modules_to_save"
        )
    extra = artifact.extra_tensors()
    resized = [n for n in extra if any(f".{e}." in f".{n}" for e in _EMBEDDING_NAMES)]
    if resized and not artifact.modules_to_save:
        problems.append(
            f"the adapter holds embedding/head weights ({resized[0]!r}"
            f"{f' and {len(resized) - 1} more' if len(resized) > 1 else ''}): resized "
            "embeddings are not supported; keep the base vocabulary"
        )
    if artifact.config.get("use_dora"):
        problems.append("use_dora=True: DoRA adapters are not supported; train plain LoRA")
    return problems


def base_modules(config: Any) -> BaseModules:
    """The module tree of the architecture ``config`` describes (cached per config)."""
    cfg = _as_pretrained_config(config)
    key = hashlib.sha256(
        json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()
    ).hexdigest()
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    modules: dict[str, tuple[int | None, int | None]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            modules[name] = (mod.in_features, mod.out_features)
        elif isinstance(mod, torch.nn.Embedding):
            modules[name] = (mod.num_embeddings, mod.embedding_dim)
        elif type(mod).__name__ == "Conv1D" and hasattr(mod, "weight"):  # GPT-2 style
            modules[name] = tuple(mod.weight.shape)  # (in, out)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    found = BaseModules(
        architecture=(cfg.architectures or [type(model).__name__])[0],
        modules=modules,
        num_layers=getattr(text, "num_hidden_layers", None),
        hidden_size=getattr(text, "hidden_size", None),
        vocab_size=getattr(text, "vocab_size", None),
    )
    with _CACHE_LOCK:
        _CACHE[key] = found
    return found


def _artifact_or_problem(
    adapter: str | Path | AdapterArtifact, allow_pickle: bool, problems: list[str]
) -> AdapterArtifact | None:
    if isinstance(adapter, AdapterArtifact):
        return adapter
    try:
        return read_adapter(adapter, allow_pickle=allow_pickle)
    except ArtifactError as exc:  # includes UnsafeArtifactError (pickle-only)
        problems.append(str(exc))
        return None


def _base_config(base: Any, problems: list[str]) -> tuple[Any | None, str | None]:
    """``(config, repo id if known)`` from whatever form the base was given in."""
    repo_id = None
    if hasattr(base, "path") and hasattr(base, "repo_id"):  # a ResolvedModel
        repo_id, base = base.repo_id, base.path
    if isinstance(base, str | Path):
        folder = Path(base)
        config_path = folder / "config.json"
        if not config_path.is_file():
            problems.append(f"base {str(base)!r} has no config.json: not a model folder")
            return None, repo_id
        try:
            config = json.loads(config_path.read_text())
        except ValueError as exc:
            problems.append(f"base config {str(config_path)!r} is not valid JSON: {exc}")
            return None, repo_id
        return config, repo_id
    if isinstance(base, Mapping):
        return dict(base), repo_id
    if hasattr(base, "to_dict"):
        return base, repo_id
    problems.append(f"base {base!r} is neither a model folder nor a config")
    return None, repo_id


def _base_problems(
    artifact: AdapterArtifact, config: Any, base_id: str | None, same_as: set[str]
) -> list[str]:
    problems = []
    try:
        base = base_modules(config)
    except Exception as exc:  # an unknown architecture or a broken config: say which
        return [f"cannot build the base architecture from its config: {exc}"]

    named = artifact.base_model
    if base_id and named and REPO_ID_RE.fullmatch(named) and named not in same_as:
        problems.append(
            f"the adapter was trained on {named!r} but the base is {base_id!r}; "
            "use the base it names or retrain"
        )

    missing_layers = sorted(
        i for i in artifact.layer_indices() if base.num_layers is not None and i >= base.num_layers
    )
    if missing_layers:
        problems.append(
            f"layer count mismatch: the adapter changes layer {missing_layers[-1]} but the base "
            f"({base.architecture}) has {base.num_layers} layers"
        )

    absent, mismatched = [], []
    for mod in artifact.lora_modules():
        if mod.path not in base.modules:
            if not _beyond_layers(mod.path, base.num_layers):
                absent.append(mod.path)
            continue
        want_in, want_out = base.modules[mod.path]
        if (mod.in_features, mod.out_features) != (
            want_in,
            want_out,
        ) and mod.out_features is not None:
            mismatched.append((mod, want_in, want_out))
    if absent:
        problems.append(
            f"module {absent[0]!r}{f' and {len(absent) - 1} more' if len(absent) > 1 else ''} "
            f"not found in the base ({base.architecture}): architecture mismatch"
        )
    if mismatched:
        mod, want_in, want_out = mismatched[0]
        problems.append(
            f"shape mismatch (hidden size): {mod.path!r} is {mod.in_features}->{mod.out_features} "
            f"in the adapter but {want_in}->{want_out} in the base ({base.architecture}, "
            f"hidden_size={base.hidden_size})"
            + (f"; {len(mismatched) - 1} more module(s) differ" if len(mismatched) > 1 else "")
        )

    problems += _target_problems(artifact.config.get("target_modules"), base)
    return problems


def _target_problems(targets: Any, base: BaseModules) -> list[str]:
    if targets is None or targets == "all-linear":
        return []
    if isinstance(targets, str):
        return _pattern_problems(targets, base)
    names = base.names()
    unknown = [t for t in targets if t.rsplit(".", 1)[-1] not in names and t not in base.modules]
    if unknown:
        return [
            f"target module(s) {sorted(unknown)!r} do not exist in the base ({base.architecture}); "
            f"it has {sorted(n for n in names if not n.isdigit())!r}"
        ]
    return []


def _pattern_problems(pattern: str, base: BaseModules) -> list[str]:
    """A string ``target_modules`` is a regular expression PEFT full-matches against module
    names. Python's ``re`` can backtrack for minutes on a hostile one, holding the GIL (the
    server's check runs on every new adapter name); the ``regex`` package (transformers
    depends on it, so it is there wherever a base's modules are listed) matches the same
    syntax within a time budget."""
    import regex

    shown = repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")
    if len(pattern) > MAX_PATTERN_CHARS:
        return [
            f"target_modules pattern {shown} is {len(pattern)} characters long, over the limit "
            f"of {MAX_PATTERN_CHARS}"
        ]
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        return [f"target_modules pattern {shown} is not a valid regular expression: {exc}"]
    deadline = time.monotonic() + MATCH_BUDGET_S
    try:
        for path in base.modules:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if compiled.fullmatch(path, timeout=left):
                return []
    except TimeoutError:
        return [
            f"target_modules pattern {shown} took over {MATCH_BUDGET_S} s to match the base's "
            "module names (catastrophic backtracking): list the modules, e.g. [q_proj, v_proj]"
        ]
    return [f"target_modules pattern {shown} matches no module of the base ({base.architecture})"]


def _beyond_layers(path: str, num_layers: int | None) -> bool:
    m = re.search(r"\.(?:layers|h|blocks|layer)\.(\d+)\.", f".{path}")
    return bool(m and num_layers is not None and int(m.group(1)) >= num_layers)


def _as_pretrained_config(config: Any):
    if hasattr(config, "to_dict") and not isinstance(config, Mapping):
        return config
    from transformers import AutoConfig

    data = dict(config)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ValueError("the config has no 'model_type'")
    data.pop("quantization_config", None)
    return AutoConfig.for_model(model_type, **data)
