"""The server's configuration: one typed tree, every option and its default defined once.

``ServerConfig`` holds what the whole server shares (``base``, ``adapters``, ``engine``,
``merged``, ``engine_process``) and four parts: ``http`` (``HttpConfig``, in
``http_config.py``: address, keys, what it serves and accepts), ``peft`` (``PeftEngineConfig``,
in ``peft_config.py``: the engine sizes; the vLLM engine takes the ones the two engines share
from there too, so each is given once), ``vllm`` (``VllmConfig``:
options only vLLM has) and ``scale`` (``ScaleConfig``, in ``scale/config.py``: replicas on
Ray Serve). Fields made with ``option()`` are also ``loradock serve`` options:
``loradock/cli/serve.py`` builds each flag from the field's name, type, default and help text.

Each part is validated when created; problems are collected, then one ``ConfigError`` lists
them all (litgpt's style), so a user fixes a command line in one go. ``ServerConfig``
checks what spans parts: engine-specific options are refused with the other engine rather than
silently ignored, and the LoRA sizes with ``merged`` (``base`` is then a model published by
``loradock merge``, served alone on either engine). ``ServerConfig.from_options(**flat)``
builds the tree from flat keywords (the CLI's, tests' tables) and reports every problem of
every part at once.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loradock.errors import ConfigError, InvalidNameError
from loradock.serving.config_fields import CLI, option, refuse
from loradock.serving.engines.vllm.options import VllmConfig
from loradock.serving.http_config import SERVED_NAME_RE, HttpConfig
from loradock.serving.peft_config import PeftEngineConfig
from loradock.serving.scale.config import ScaleConfig

ENGINES = ("auto", "peft", "vllm")
VLLM_LORA_OPTIONS = ("max_lora_rank", "max_loras", "max_cpu_loras")
PEFT_ONLY_OPTIONS = (
    "max_wait_ms",
    "device",
    "torch_threads",
    "max_adapter_rank",
    "max_cpu_adapter_bytes",
)
# The engine process's supervision (engines/peft/supervisor.py): nothing to supervise in-process.
SUPERVISION_OPTIONS = (
    "restart_backoff_s",
    "restart_backoff_max_s",
    "crash_loop_deaths",
    "crash_loop_window_s",
)


def resolve_engine(engine: str) -> str:
    """``auto``: vLLM where a CUDA GPU is present and vLLM is installed, else the PEFT engine.

    Measured (``bench/serving.py``): on a CPU the PEFT engine out-runs vLLM's CPU build several
    times over, while on a GPU vLLM's paged attention, CUDA graphs and kernels are far ahead of
    it. The device is ``loradock.modeling.pick_device`` (``LORADOCK_DEVICE`` overrides it)."""
    if engine != "auto":
        return engine
    from loradock.modeling import pick_device

    device = pick_device()
    has_vllm = vllm_installed()
    chosen = "vllm" if device.startswith("cuda") and has_vllm else "peft"
    why = f"device {device}" + ("" if has_vllm else ", vllm not installed")
    logging.getLogger(__name__).info("engine auto: %s (%s)", chosen, why)
    return chosen


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def looks_like_path(name: str) -> bool:
    """A base given as a folder (``/x``, ``./x``, ``~/x``, ``a/b/c``), not a registry name."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.strip("/").count("/") > 1


PARTS = {
    "http": HttpConfig,
    "peft": PeftEngineConfig,
    "vllm": VllmConfig,
    "scale": ScaleConfig,
}


@dataclass(frozen=True)
class ServerConfig:
    """One server; ``adapters`` maps a served alias to a registry name."""

    base: str
    adapters: dict[str, str] = field(default_factory=dict)
    engine: str = "auto"  # resolve_engine: vLLM on a CUDA GPU, else the PEFT engine
    merged: bool = False  # `base` is a merged model: served alone, no adapters
    # PEFT: run the model in its own process (engines/peft/process.py), so HTTP work never
    # holds the GIL the model needs. False keeps it in this process (tests, notebooks).
    # vLLM always runs its engine core in a process of its own.
    engine_process: bool = option(
        True,
        "PEFT: run the model in its own process (no GIL shared with HTTP work)",
        "--engine-process/--in-process",
    )
    http: HttpConfig = field(default_factory=HttpConfig)
    peft: PeftEngineConfig = field(default_factory=PeftEngineConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", resolve_engine(self.engine))
        refuse(self._problems(self._flat()))

    @classmethod
    def from_options(cls, base: str, **options: Any) -> ServerConfig:
        """The tree from flat keywords (``port=0, dtype="float32", ...``); one error for all."""
        top = _field_names(cls) - set(PARTS)
        known = top.union(*(_field_names(part) for part in PARTS.values()))
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown server option(s): {', '.join(unknown)}")
        values = {**_defaults(cls, top - {"base"}), "base": base, **options}
        values["engine"] = resolve_engine(values["engine"])
        problems = []
        for part in PARTS.values():
            values.update(_defaults(part, _field_names(part) - set(options)))
            problems += part.problems(values)
        refuse(problems + cls._problems(values))
        parts = {n: p(**{k: values[k] for k in _field_names(p)}) for n, p in PARTS.items()}
        return cls(**{k: values[k] for k in top}, **parts)

    def _flat(self) -> dict[str, Any]:
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in PARTS:
            flat.update(vars(flat.pop(name)))
        return flat

    @staticmethod
    def _problems(v: Mapping[str, Any]) -> list[str]:
        """What the parts cannot check alone: the shared fields and how the parts combine."""
        from loradock.registry.names import parse_name

        problems: list[str] = []
        base, engine = v["base"], v["engine"]
        if not isinstance(base, str) or not base.strip():
            problems.append(f"base {base!r} is empty: name a base model (org/name or folder)")
        if engine not in ENGINES:
            problems.append(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
        for alias, target in v["adapters"].items():
            if not SERVED_NAME_RE.fullmatch(alias):
                problems.append(
                    f"served adapter name {alias!r} must be one word of letters, digits, "
                    "'.', '_' or '-' (no '/'), e.g. --adapter dates=acme/dates-lora@prod"
                )
            try:
                parse_name(target)
            except InvalidNameError:
                problems.append(
                    f"adapter {alias!r} -> {target!r}: expected a registry name "
                    "'org/name[@rev]' (never a path)"
                )
        served = v["served_base_name"]
        if served is not None and served in v["adapters"]:
            problems.append(f"served base name {served!r} is also an --adapter name")
        return problems + _merged_problems(v) + _engine_problems(v) + _scale_problems(v)

    @property
    def serves_adapters(self) -> bool:
        return not self.merged

    @property
    def base_model_name(self) -> str:
        if self.http.served_base_name:
            return self.http.served_base_name
        if looks_like_path(self.base):
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", self.base.rstrip("/\\").rsplit("/", 1)[-1])
            return name.strip(".-") or "base"
        return self.base

    @classmethod
    def parse_adapter_options(cls, options: list[str]) -> dict[str, str]:
        """``["dates=acme/dates@prod", ...]`` -> ``{"dates": "acme/dates@prod"}``; raises once."""
        parsed: dict[str, str] = {}
        problems: list[str] = []
        for option_text in options:
            name, sep, target = option_text.partition("=")
            if not sep or not name or not target:
                problems.append(f"--adapter {option_text!r}: expected NAME=ORG/REPO[@rev|@alias]")
            elif name in parsed:
                problems.append(f"--adapter {option_text!r}: the name {name!r} is given twice")
            else:
                parsed[name] = target
        if problems:
            raise ConfigError("Invalid --adapter options", problems)
        return parsed


def _merged_problems(v: Mapping[str, Any]) -> list[str]:
    merged = v["merged"]
    if not isinstance(merged, bool):
        return [f"merged={merged!r} must be True or False"]
    if not merged:
        return []
    problems = [  # with the PEFT engine these are refused as vLLM options instead
        f"{name}={v[name]!r} sizes LoRA adapters, but a merged model takes none: "
        f"drop {_flag(name, v[name])}"
        for name in VLLM_LORA_OPTIONS
        if v[name] is not None and v["engine"] != "peft"
    ]
    if v["adapters"]:
        names = ", ".join(f"{a}={t}" for a, t in v["adapters"].items())
        problems.insert(
            0,
            f"adapters {names!r} given with merged=True: a merged model takes no adapters "
            "(serve them with --base BASE --adapter NAME=REPO instead)",
        )
    return problems


def _scale_problems(v: Mapping[str, Any]) -> list[str]:
    """Replicas run the engine inside each Ray Serve replica: Ray replaces a dead replica, so
    the engine-process supervision has nothing to do there."""
    if v["replicas"] is None:
        return []
    if v["merged"] is True:
        return ["replicas serve a base with its adapters: drop --merged (or --replicas)"]
    return [
        f"{name}={v[name]!r} supervises the engine process, but with --replicas Ray replaces "
        f"a dead replica: drop {_flag(name, v[name])}"
        for name in SUPERVISION_OPTIONS
        if v[name] != _DEFAULTS[name]
    ]


def _engine_problems(v: Mapping[str, Any]) -> list[str]:
    """An option of one engine given with the other is refused, never silently ignored."""
    engine = v["engine"]
    if engine not in ENGINES:
        return []
    if engine == "peft":
        other, fix, names = "vLLM", "add --engine vllm or drop", list(_defaults(VllmConfig))
    else:
        names = [*PEFT_ONLY_OPTIONS, *SUPERVISION_OPTIONS, "engine_process"]
        other, fix = "PEFT-engine", "add --engine peft or drop"
    problems = [
        f"{name}={v[name]!r} is a {other} option, but engine is {engine!r}: "
        f"{fix} {_flag(name, v[name])}"
        for name in names
        if v[name] != _DEFAULTS[name]
    ]
    if engine == "peft" and v["engine_process"] is False:
        problems += [
            f"{name}={v[name]!r} supervises the engine process, but the engine runs in the "
            f"server's process (--in-process): drop {_flag(name, v[name])}"
            for name in SUPERVISION_OPTIONS
            if v[name] != _DEFAULTS[name]
        ]
    return problems


def _flag(name: str, value: Any) -> str:
    """How a user gave ``name``: its CLI flag (the half of ``--a/--b`` that sets ``value``)."""
    meta = _CLI_OPTIONS.get(name)
    if meta is None:
        return name  # a Python-only field
    if not meta.flags:
        return "--" + name.replace("_", "-")
    on, _, off = meta.flags[0].partition("/")
    return off if off and value is False else on


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _defaults(cls: type, names: set[str] | None = None) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if names is None or f.name in names:
            has_factory = f.default_factory is not dataclasses.MISSING
            out[f.name] = f.default_factory() if has_factory else f.default
    return out


_ALL = (ServerConfig, *PARTS.values())
_DEFAULTS = {k: v for cls in PARTS.values() for k, v in _defaults(cls).items()}
_DEFAULTS["engine_process"] = _defaults(ServerConfig, {"engine_process"})["engine_process"]
_CLI_OPTIONS = {
    f.name: f.metadata[CLI] for c in _ALL for f in dataclasses.fields(c) if CLI in f.metadata
}
