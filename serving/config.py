"""ServerConfig: every option of ``loradock serve``, validated once when it is created.

Validation follows litgpt's config style: every problem is collected, then one ``ConfigError``
lists them all, so a user fixes a command line in one go instead of one error at a time.

``merged=True`` serves ``base`` (a model published by ``loradock merge``) as a plain model that
takes no adapters, on either engine (``loradock serve --merged`` picks vLLM unless ``--engine
peft`` is given). The vLLM-only options (``max_lora_rank`` ... ``kv_cache_memory_bytes``) are
refused with any other engine rather than silently ignored, and the LoRA ones with ``merged``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loradock.errors import ConfigError, InvalidNameError
from loradock.registry.names import parse_name, validate_repo_id
from loradock.serving.engines.vllm.limits import VLLM_LORA_RANKS  # plain data: vLLM is not imported

ENGINES = ("peft", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# A served alias is a single word: it must never look like a path or a registry name.
SERVED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VLLM_LORA_OPTIONS = ("max_lora_rank", "max_loras", "max_cpu_loras")
VLLM_ENGINE_OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "kv_cache_memory_bytes")


def looks_like_path(name: str) -> bool:
    """A base given as a folder (``/x``, ``./x``, ``~/x``, ``a/b/c``), not a registry name."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.strip("/").count("/") > 1


@dataclass(frozen=True)
class PeftEngineConfig:
    """The PEFT engine's options (``engines/peft/``), as ``ServerConfig.peft`` hands them over."""

    max_loaded: int
    max_cpu_adapters: int
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    max_model_len: int
    dtype: str
    device: str | None
    torch_threads: int | None


@dataclass(frozen=True)
class ServerConfig:
    """Options of one server; ``adapters`` maps a served alias to a registry name."""

    base: str
    adapters: dict[str, str] = field(default_factory=dict)
    engine: str = "peft"
    max_loaded: int = 8
    max_cpu_adapters: int = 64
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_model_len: int = 512
    dtype: str = "auto"
    device: str | None = None
    torch_threads: int | None = None  # the model thread's intra-op threads (None: torch's)
    # PEFT: run the model in its own process (engine_process.py), so HTTP work never holds
    # the GIL the model needs. False keeps it in this process (tests, notebooks, debugging).
    # vLLM always runs its engine core in a process of its own.
    engine_process: bool = True
    api_key: str | None = field(default=None, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    # What /v1/models and requests call the base: `base`, or a folder's own name when `base`
    # is a path (a model id never shows a path of the server's disk).
    served_base_name: str | None = None
    allow_any_registry_adapter: bool = True  # serve any registry adapter, not just --adapter ones
    merged: bool = False  # `base` is a merged model: served alone, no adapters
    # vLLM only (None: derived from the registry, or vLLM's default); see docs/vllm.md.
    max_lora_rank: int | None = None
    max_loras: int | None = None  # adapters in one batch (default: from --max-loaded)
    max_cpu_loras: int | None = None  # adapters kept loaded (default: from --max-cpu-adapters)
    tensor_parallel_size: int | None = None  # GPUs one model is split over
    gpu_memory_utilization: float | None = None  # share of GPU (CPU build: host) memory
    kv_cache_memory_bytes: int | None = None  # a fixed KV cache size instead of the share

    @property
    def serves_adapters(self) -> bool:
        return not self.merged

    @property
    def peft(self) -> PeftEngineConfig:
        """The PEFT engine's part of these options."""
        return PeftEngineConfig(
            max_loaded=self.max_loaded,
            max_cpu_adapters=self.max_cpu_adapters,
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            max_queue=self.max_queue,
            max_model_len=self.max_model_len,
            dtype=self.dtype,
            device=self.device,
            torch_threads=self.torch_threads,
        )

    def peft_engine_options(self) -> dict[str, Any]:
        """``PeftEngine`` keyword options (all but ``base_name``), in or out of process."""
        p = self.peft
        return {
            "max_loaded": p.max_loaded,
            "max_cpu_adapters": p.max_cpu_adapters,
            "max_batch_size": p.max_batch_size,
            "max_wait_ms": p.max_wait_ms,
            "max_queue": p.max_queue,
            "max_model_len": p.max_model_len,
            "dtype": p.dtype,
            "device": p.device,
            "threads": p.torch_threads,
        }

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.base, str) or not self.base.strip():
            problems.append(f"base {self.base!r} is empty: name a base model (org/name or folder)")
        if self.engine not in ENGINES:
            problems.append(f"engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        for name, low in (
            ("max_loaded", 1),
            ("max_cpu_adapters", 0),
            ("max_batch_size", 1),
            ("max_queue", 1),
            ("max_model_len", 8),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{name}={value!r} must be an integer >= {low}")
        if self.torch_threads is not None and (
            not isinstance(self.torch_threads, int) or self.torch_threads < 1
        ):
            problems.append(f"torch_threads={self.torch_threads!r} must be an integer >= 1")
        if not isinstance(self.max_wait_ms, (int, float)) or self.max_wait_ms < 0:
            problems.append(f"max_wait_ms={self.max_wait_ms!r} must be a number >= 0")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            problems.append(f"port={self.port!r} must be an integer in 0..65535 (0: any free port)")
        for alias, target in self.adapters.items():
            if not SERVED_NAME_RE.match(alias):
                problems.append(
                    f"served adapter name {alias!r} must be one word of letters, digits, "
                    "'.', '_' or '-' (no '/'), e.g. --adapter dates=acme/dates-lora@prod"
                )
            try:
                parse_name(target)
            except InvalidNameError:
                problems.append(
                    f"adapter {alias!r} -> {target!r}: expected a registry name 'org/name[@rev]' "
                    "(never a path)"
                )
        served = self.served_base_name
        if served is not None and not _valid_served_base_name(served):
            problems.append(
                f"served base name {served!r} must be one word or 'org/name' of letters, "
                "digits, '.', '_' or '-' (never a path), e.g. --served-name acme/smollm2"
            )
        elif served is not None and served in self.adapters:
            problems.append(f"served base name {served!r} is also an --adapter name")
        for key_name in ("api_key", "admin_key"):
            key = getattr(self, key_name)
            if key is not None and (not isinstance(key, str) or len(key) < 4):
                problems.append(f"{key_name} must be a string of at least 4 characters")
        problems += self._vllm_problems()
        if problems:
            raise ConfigError("Invalid server options", problems)

    def _vllm_problems(self) -> list[str]:
        problems: list[str] = []
        if not isinstance(self.merged, bool):
            problems.append(f"merged={self.merged!r} must be True or False")
        elif self.merged and self.adapters:
            names = ", ".join(f"{a}={t}" for a, t in self.adapters.items())
            problems.append(
                f"adapters {names!r} given with merged=True: a merged model takes no adapters "
                "(serve them with --base BASE --adapter NAME=REPO instead)"
            )
        for name in VLLM_LORA_OPTIONS + VLLM_ENGINE_OPTIONS:
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if value is None:
                continue
            if self.engine != "vllm" and self.engine in ENGINES:
                problems.append(
                    f"{name}={value!r} is a vLLM option, but engine is {self.engine!r}: "
                    f"add --engine vllm or drop {flag}"
                )
            elif self.merged is True and name in VLLM_LORA_OPTIONS:
                problems.append(
                    f"{name}={value!r} sizes LoRA adapters, but a merged model takes none: "
                    f"drop {flag}"
                )
        for name in ("max_loras", "max_cpu_loras", "tensor_parallel_size", "kv_cache_memory_bytes"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                problems.append(f"{name}={value!r} must be an integer >= 1")
        rank = self.max_lora_rank
        if rank is not None and (isinstance(rank, bool) or rank not in VLLM_LORA_RANKS):
            problems.append(
                f"max_lora_rank={rank!r} must be one of {', '.join(map(str, VLLM_LORA_RANKS))} "
                "(the ranks vLLM accepts; smaller adapters are padded)"
            )
        loras, cpu = self.max_loras, self.max_cpu_loras
        if isinstance(loras, int) and isinstance(cpu, int) and 1 <= cpu < loras:
            problems.append(f"max_cpu_loras={cpu!r} must be >= max_loras ({loras!r})")
        gmu = self.gpu_memory_utilization
        if gmu is not None and (
            isinstance(gmu, bool) or not isinstance(gmu, int | float) or not 0 < gmu <= 1
        ):
            problems.append(
                f"gpu_memory_utilization={gmu!r} must be a number in (0, 1], e.g. 0.9 "
                "(the share of the GPU's memory vLLM may use)"
            )
        return problems

    @property
    def base_model_name(self) -> str:
        if self.served_base_name:
            return self.served_base_name
        if looks_like_path(self.base):
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", self.base.rstrip("/\\").rsplit("/", 1)[-1])
            return name.strip(".-") or "base"
        return self.base

    @classmethod
    def parse_adapter_options(cls, options: list[str]) -> dict[str, str]:
        """``["dates=acme/dates@prod", ...]`` -> ``{"dates": "acme/dates@prod"}``; raises once."""
        parsed: dict[str, str] = {}
        problems: list[str] = []
        for option in options:
            name, sep, target = option.partition("=")
            if not sep or not name or not target:
                problems.append(f"--adapter {option!r}: expected NAME=ORG/REPO[@rev|@alias]")
            elif name in parsed:
                problems.append(f"--adapter {option!r}: the name {name!r} is given twice")
            else:
                parsed[name] = target
        if problems:
            raise ConfigError("Invalid --adapter options", problems)
        return parsed


def _valid_served_base_name(name: str) -> bool:
    if not isinstance(name, str):
        return False
    if SERVED_NAME_RE.match(name):
        return True
    try:
        validate_repo_id(name)
    except InvalidNameError:
        return False
    return True
