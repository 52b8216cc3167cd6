"""The engine interface: what the HTTP layer needs from whatever generates tokens.

Two implementations stand behind it: the PEFT hot-swap engine (one base model, adapters
attached on demand) and the vLLM engine (multi-LoRA or merged weights). The HTTP layer knows
only these types; the API tests run against both engines.

Notes for engine authors (S1 -> S2):
- ``server.build_engine`` calls ``loradock.serving.vllm_engine.create_engine(config, base_path,
  registry=registry)`` for ``--engine vllm`` (``config`` is a ``serving.config.ServerConfig``;
  ``base_path`` the resolved base folder; the registry sizes LoRA limits) and expects an
  ``Engine``. ``capabilities.merged`` (or ``config.merged``) makes the app refuse adapter names.
- The app calls ``await engine.start()`` in its lifespan and ``shutdown()`` at exit.
- ``generate`` should raise up-front errors (``loradock.errors.RequestError`` for a prompt over
  ``max_model_len``, ``QueueFullError`` when full) before its first chunk: the app awaits the
  first chunk before it sends headers, so these become 400/429, not a broken stream.
- Optional: ``stats() -> dict[str, float]`` with keys like ``queue_depth``, ``running``,
  ``adapter_disk_loads``, ``adapter_evictions``, ``adapter_slot_hits`` feeds ``/metrics``
  (see ``serving/metrics.py`` for the names read).
- ``unload(name)`` gets the name requests used (``AdapterSpec.name``); raise
  ``AdapterNotFoundError`` when nothing of that name is loaded.
- ``GenerationRequest.stream`` is False for non-streaming requests: chunks may be coalesced
  (the PEFT engine sends the first token, then the rest at the end); ignoring it is fine.
- API tests: ``tests/serving/conftest.py`` has an ``engine_kind`` fixture (``peft``, ``vllm``);
  ``make_engine(kind, config, base_path, registry)`` builds it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from loradock.errors import RequestError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter the registry resolved and checked: never built from a raw request path."""

    name: str  # the name requests use (registry name as asked, e.g. "acme/dates@prod")
    repo_id: str
    sha: str
    path: Path  # verified local snapshot
    rank: int
    target_modules: tuple[str, ...] = ()


@dataclass
class GenerationRequest:
    request_id: str
    prompt: str
    sampling: SamplingParams
    adapter: AdapterSpec | None = None  # None: the base model
    prompt_token_ids: list[int] | None = None  # set by the engine's tokenizer when known
    # False: the caller wants the whole answer only (a non-streaming HTTP request). An engine
    # may then send the first chunk (time to first token) and the rest as ONE final chunk,
    # sparing the event loop a wake-up per token; an engine that ignores it stays correct.
    stream: bool = True


@dataclass
class GenerationChunk:
    """A piece of output; the last chunk of a request has ``finish_reason`` set."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # cumulative
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class EngineCapabilities:
    name: str  # "peft" or "vllm"
    max_lora_rank: int | None
    max_loaded: int  # adapters attached at once
    max_model_len: int
    merged: bool = False  # serving merged weights: no adapters


@runtime_checkable
class Engine(Protocol):
    capabilities: EngineCapabilities
    base_name: str

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def load(self, adapter: AdapterSpec) -> None: ...

    async def unload(self, name: str) -> None: ...

    def loaded_adapters(self) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...


def check_prompt_fits(n_tokens: int, max_model_len: int) -> None:
    """A 400 before any work when a prompt leaves no room to generate."""
    if n_tokens >= max_model_len:
        raise RequestError(
            f"The prompt is {n_tokens} tokens; this server's context is {max_model_len} tokens "
            f"(max_model_len), leaving no room to generate. Shorten the prompt."
        )
