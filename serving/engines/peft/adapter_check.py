"""An adapter checked against the model it is to run on, once, when it is read.

``check_adapter`` returns the adapter's weights split per module, ``{module: (A, B, scale)}``,
or raises one ``IncompatibleAdapterError`` (422) listing every problem: features this engine
does not serve (DoRA, ``modules_to_save``, tensors other than a linear layer's LoRA A/B),
modules or shapes the model lacks, a rank over the engine's limit (``limits.py``), weights that
are not finite (NaN/inf would poison each row they touch) and module-name patterns that are
hostile or invalid (``patterns.py``). ``MultiLora.attach`` trusts what this accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from loradock.errors import IncompatibleAdapterError
from loradock.serving.engines.peft.adapter_cache import ParsedWeights
from loradock.serving.engines.peft.limits import MAX_LORA_RANK
from loradock.serving.engines.peft.patterns import ModulePatterns

_KEY_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<role>A|B)\.weight$")


def check_adapter(
    name: str,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    *,
    module_of: Callable[[str], nn.Module | None],
    max_rank: int = MAX_LORA_RANK,
) -> ParsedWeights:
    """``name``'s weights per module, checked; ``module_of(path)`` is the base model's module
    at that path (None: the model has none)."""
    problems = _config_problems(config)
    found = _split(state_dict, problems)
    patterns = ModulePatterns(name, config)
    out: ParsedWeights = {}
    for module, roles in found.items():
        weights = _module_weights(module, roles, module_of(module), config, patterns)
        if isinstance(weights, str):
            problems.append(weights)
        else:
            out[module] = weights
    rank = max((a.shape[0] for a, _, _ in out.values()), default=0)
    if rank > max_rank:
        problems.append(
            f"rank {rank} is over this engine's limit of {max_rank}: retrain with r<={max_rank}"
        )
    if not found:
        problems.append("has no LoRA A/B matrices")
    if problems:
        raise IncompatibleAdapterError(f"Adapter {name!r} cannot be served", problems)
    return out


def _module_weights(
    module: str, roles: dict[str, torch.Tensor], target: Any, config: Any, patterns: ModulePatterns
) -> tuple[torch.Tensor, torch.Tensor, float] | str:
    """One module's ``(A, B, scale)``, or what is wrong with it."""
    if target is None:
        return f"module {module!r} is not in the base model"
    if not isinstance(target, nn.Linear) or set(roles) != {"A", "B"}:
        return f"module {module!r} is not a linear layer with lora_A and lora_B"
    a, b = roles["A"], roles["B"]
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] == 0:
        return f"module {module!r}: LoRA shapes {tuple(a.shape)}/{tuple(b.shape)}"
    r = a.shape[0]
    if a.shape[1] != target.in_features or b.shape != (target.out_features, r):
        return f"module {module!r}: LoRA shapes {tuple(a.shape)}/{tuple(b.shape)}"
    if not patterns.targeted(module):
        return (
            f"module {module!r} has LoRA weights but target_modules={config.target_modules!r} "
            "does not select it (PEFT would ignore them)"
        )
    alpha = patterns.value(config.alpha_pattern, module, config.lora_alpha)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        return f"module {module!r}: lora_alpha {alpha!r} is not a finite number"
    scale = alpha / math.sqrt(r) if config.use_rslora else alpha / r
    # What attach writes (B.T * scale, in the weights' dtype) must be finite too.
    if not (torch.isfinite(a).all() and torch.isfinite(b * scale).all()):
        return f"module {module!r}: its LoRA weights (times the scale) hold NaN or inf"
    return a, b, scale


def _config_problems(config: Any) -> list[str]:
    problems = []
    if getattr(config, "use_dora", False):
        problems.append("uses DoRA (lora_magnitude_vector): not supported by this engine")
    if getattr(config, "modules_to_save", None):
        problems.append(f"has modules_to_save={config.modules_to_save}: not supported")
    return problems


def _split(state_dict: dict[str, torch.Tensor], problems: list[str]) -> dict[str, dict]:
    """``{module: {"A": tensor, "B": tensor}}``; any other tensor is a problem."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        m = _KEY_RE.match(key)
        if m is None:
            problems.append(f"tensor {key!r} is not a LoRA A/B matrix of a linear layer")
            continue
        found.setdefault(m["module"], {})[m["role"]] = tensor
    return found
