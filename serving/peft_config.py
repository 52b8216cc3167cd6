"""``PeftEngineConfig``: the engine part of the server configuration (``config.ServerConfig.peft``).

The engine sizes, deadlines and the engine process's restart policy. The PEFT engine uses
every field; the vLLM engine takes the sizes the two engines share from here too (so each is
given once) and ``ServerConfig`` refuses the PEFT-only ones with ``--engine vllm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loradock.serving.config_fields import int_problems, option, refuse
from loradock.serving.engines.peft.limits import MAX_CPU_ADAPTER_BYTES, MAX_LORA_RANK

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PeftEngineConfig:
    """The engine sizes (``engines/peft/`` uses all; vLLM all but the PEFT-only ones)."""

    max_loaded: int = option(8, "Adapters attached at once (vLLM: adapters in one batch)")
    max_cpu_adapters: int = option(64, "Adapters kept in CPU memory")
    max_batch_size: int = option(32, "Sequences run at once")
    max_wait_ms: float = option(5.0, "PEFT: how long a new batch waits for more requests")
    max_queue: int = option(256, "Waiting requests before 429")
    max_model_len: int = option(512, "Context length: prompt plus completion tokens")
    dtype: str = option("auto", f"Weights' dtype: {', '.join(DTYPES)}")
    device: str | None = None  # PEFT: None picks the GPU when there is one
    torch_threads: int | None = option(
        None, "PEFT: torch threads of the model thread (default: torch's)", "--threads"
    )
    # Every slot of a layer is as wide as the widest adapter attached: one huge rank would
    # cost every slot its memory, so adapters above this rank are refused (422).
    max_adapter_rank: int = option(
        MAX_LORA_RANK, "PEFT: largest LoRA rank an adapter may have (higher: 422)"
    )
    max_cpu_adapter_bytes: int = option(
        MAX_CPU_ADAPTER_BYTES,
        "PEFT: tensor bytes the CPU adapter tier holds, beside --max-cpu-adapters",
    )

    # A request past this is cancelled in the engine and answered 504 (both engines).
    request_timeout: float = option(600.0, "Seconds a request may run before 504")
    restart_backoff_s: float = option(
        0.5, "PEFT process: wait before restarting a dead engine (doubles per recent death)"
    )
    restart_backoff_max_s: float = option(30.0, "PEFT process: longest wait before a restart")
    crash_loop_deaths: int = option(
        5, "PEFT process: engine deaths within --crash-loop-window-s that stop restarts"
    )
    crash_loop_window_s: float = option(
        120.0, "PEFT process: seconds over which engine deaths are counted"
    )

    def __post_init__(self) -> None:
        refuse(self.problems(vars(self)))

    @staticmethod
    def problems(v: Mapping[str, Any]) -> list[str]:
        problems = []
        for name in ("request_timeout", "restart_backoff_max_s", "crash_loop_window_s"):
            problems += _positive_number(name, v[name], low=0.0, strict=True)
        problems += _positive_number("restart_backoff_s", v["restart_backoff_s"], low=0.0)
        if v["dtype"] not in DTYPES:
            problems.append(f"dtype {v['dtype']!r} is not one of {', '.join(DTYPES)}")
        lows = {"max_loaded": 1, "max_cpu_adapters": 0, "max_batch_size": 1, "max_queue": 1}
        lows["crash_loop_deaths"] = 1
        problems += int_problems(v, {**lows, "max_model_len": 8})
        problems += int_problems(v, {"torch_threads": 1}, optional={"torch_threads"})
        problems += int_problems(v, {"max_adapter_rank": 1, "max_cpu_adapter_bytes": 0})
        return problems + _positive_number("max_wait_ms", v["max_wait_ms"], low=0.0)


def _positive_number(name: str, value: Any, *, low: float, strict: bool = False) -> list[str]:
    """``name=value must be a number > low`` (``>=`` unless ``strict``), if it is not."""
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if number and (value > low if strict else value >= low):
        return []
    return [f"{name}={value!r} must be a number {'>' if strict else '>='} {low:g}"]
