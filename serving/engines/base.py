"""The engine interface: what the HTTP layer needs from whatever generates tokens.

Two implementations stand behind it: the PEFT hot-swap engine (``engines/peft/``: one base
model, adapters attached on demand) and the vLLM engine (``engines/vllm/``: multi-LoRA or merged
weights). The HTTP layer knows only these types; the API tests run against both engines.

- ``generate`` raises up-front errors (``RequestError`` for a prompt over ``max_model_len``,
  ``QueueFullError`` when full) before its first chunk: the HTTP layer awaits the first chunk
  before it sends headers, so these become 400/429, not a broken stream.
- ``unload(name)`` gets the name requests used (``AdapterSpec.name``) and raises
  ``AdapterNotFoundError`` when nothing of that name is loaded.
- ``stats()`` feeds ``/metrics`` (``http/metrics.py`` reads the names it knows);
  ``health()`` is None while the engine runs, else why it does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

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
    """One request: a completion's ``prompt`` or a chat's ``messages`` (rendered by the engine's
    front end, ``frontend.PromptFrontend``), never both."""

    request_id: str
    prompt: str | None
    sampling: SamplingParams
    adapter: AdapterSpec | None = None  # None: the base model
    prompt_token_ids: list[int] | None = None  # set by the engine's tokenizer when known
    # False: the caller wants the whole answer only (a non-streaming HTTP request). An engine
    # may then send the first chunk (time to first token) and the rest as ONE final chunk,
    # sparing the event loop a wake-up per token; an engine that ignores it stays correct.
    stream: bool = True
    messages: list[dict[str, str]] | None = None


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

    def stats(self) -> dict[str, float]: ...

    def health(self) -> str | None: ...
