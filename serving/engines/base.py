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
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]
# Bounds of the sampling surface, the same on every engine (OpenAI's and vLLM's).
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # entries of ``logit_bias``
MAX_STOP_TOKEN_IDS = 64
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; vLLM's seeds are int64 too


@dataclass(frozen=True)
class SamplingParams:
    """How a request samples; both engines honour every field (vLLM's meanings).

    Penalties follow vLLM: ``repetition_penalty`` divides positive (multiplies negative)
    logits of every token of the prompt and the output so far; ``presence_penalty`` and
    ``frequency_penalty`` subtract from the logits of output tokens (once, and per
    occurrence). ``logit_bias`` is added to the logits before them. Logprobs are those of the
    model's raw distribution (log-softmax of its logits before any of these), as vLLM reports
    by default.
    """

    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_k: int = 0  # 0: every token
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias)
    stop_token_ids: tuple[int, ...] = ()  # end the answer like EOS (finish_reason "stop")
    min_tokens: int = 0  # EOS, stop tokens and stop strings do not end the answer before
    logprobs: int | None = None  # per output token: its logprob and this many top ones
    prompt_logprobs: int | None = None  # the same for every prompt token but the first

    def adjusts_logits(self) -> bool:
        """Whether anything but temperature / top-p / top-k / min-p shapes the logits."""
        return bool(
            self.logit_bias
            or self.min_tokens
            or self.repetition_penalty != 1.0
            or self.presence_penalty
            or self.frequency_penalty
        )


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter the registry resolved and checked: never built from a raw request path."""

    name: str  # the name requests use (registry name as asked, e.g. "acme/dates@prod")
    repo_id: str
    sha: str
    path: Path  # verified local snapshot
    rank: int
    target_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class StructuredOutput:
    """What the output must match: ``kind`` "json" (``value`` a JSON schema as JSON text; ""
    any JSON object), "regex" (``value`` the pattern) or "choice" (exactly one of ``choices``).
    Sizes are bounded by the HTTP layer before an engine sees it."""

    kind: Literal["json", "regex", "choice"]
    value: str = ""
    choices: tuple[str, ...] = ()


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
    structured: StructuredOutput | None = None  # constrained decoding


@dataclass(frozen=True)
class TokenLogprob:
    """A token's logprob and the ``top`` alternatives asked for, best first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class GenerationChunk:
    """A piece of output; the last chunk of a request has ``finish_reason`` set."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # cumulative
    finish_reason: FinishReason | None = None
    # With ``SamplingParams.logprobs``: one per id of ``token_ids``.
    logprobs: list[TokenLogprob] | None = None
    # With ``SamplingParams.prompt_logprobs``, in the first chunk: one per prompt token (None
    # for the first, which nothing predicts), and the prompt's ids.
    prompt_logprobs: list[TokenLogprob | None] | None = None
    prompt_token_ids: list[int] | None = None


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
    # its ``frontend.PromptFrontend`` (set once started): the HTTP layer tokenises with it, so
    # token limits are 400s before a request is submitted, and renders token texts with it
    frontend: Any

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def load(self, adapter: AdapterSpec) -> None: ...

    async def unload(self, name: str) -> None: ...

    def loaded_adapters(self) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...

    def stats(self) -> dict[str, float]: ...

    def health(self) -> str | None: ...
