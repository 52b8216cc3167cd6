"""OpenAI-compatible request bodies (completions, chat, adapter loading); the response bodies
are in ``responses.py``.

Error bodies are made in ``errors.py``; a field a request body does not declare is a 400 that
names it (``request_fields.py``).

Requests are strict about every value (ranges checked here, so a bad value is a 400 that names
the field). Every size is bounded here too (prompt and message lengths, number of messages,
prompts, choices and stop strings, logit_bias entries): fixed ceilings that no context fits, so
nothing unbounded reaches a chat template or a tokenizer. The limits that depend on the
server's context (``max_tokens``, a prompt's characters) or its vocabulary (token ids) are
checked when the prompts are tokenised (``prompts.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loradock.serving.engines.base import (
    MAX_LOGIT_BIAS,
    MAX_SEED,
    MAX_STOP_TOKEN_IDS,
    MAX_TOP_LOGPROBS,
)
from loradock.serving.http.request_fields import refuse_extras
from loradock.serving.http.tools import Tool, ToolCall

MAX_CALLS_IN = 64  # tool calls in one message of the input

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 200
MAX_TEXT_CHARS = 1_000_000  # a prompt or one message; the body limit usually binds first
MAX_MESSAGES = 1024
MAX_CONTENT_PARTS = 64
MAX_CHOICES = 64  # n times the prompts of one request
# Below this a temperature is not "almost greedy" but an overflow: logits / 1e-40 are inf.
MIN_TEMPERATURE = 0.01


class _Request(BaseModel):
    # Undeclared fields are kept to be refused by name (``_no_extras``), never ignored.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=MAX_LOGIT_BIAS)
    stream_options: dict[str, bool] | None = None
    # bookkeeping OpenAI's clients send; accepted, with no effect on the answer
    user: str | None = Field(default=None, max_length=300)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: bool | None = None
    # vLLM's extensions, with vLLM's meanings (``top_k`` -1 or 0: every token)
    top_k: int = Field(default=0, ge=-1)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    stop_token_ids: list[int] | None = Field(default=None, max_length=MAX_STOP_TOKEN_IDS)
    min_tokens: int = Field(default=0, ge=0)
    # The output constraint, at most one (``structured.py`` checks and bounds them); the
    # ``guided_*`` fields are vLLM's extensions.
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None

    @field_validator("temperature")
    @classmethod
    def _sane_temperature(cls, temperature: float) -> float:
        if 0 < temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}: smaller "
                "values overflow the sampler"
            )
        return temperature

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids: {key!r} is not")
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias[{key}]={value}: a bias is in [-100, 100]")
        return bias

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_ids(cls, ids: list[int] | None) -> list[int] | None:
        if any(i < 0 for i in ids or ()):
            raise ValueError("token ids are >= 0")
        return ids

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        values = [stop] if isinstance(stop, str) else (stop or [])
        if len(values) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(values)}")
        if any(not v for v in values):
            raise ValueError("stop strings must not be empty")
        if any(len(v) > MAX_STOP_CHARS for v in values):
            longest = max(len(v) for v in values)
            raise ValueError(f"a stop string has {longest} characters: at most {MAX_STOP_CHARS}")
        return stop

    @model_validator(mode="after")
    def _no_extras(self) -> _Request:
        refuse_extras(self.model_extra or {})
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        unknown = sorted(set(self.stream_options or {}) - {"include_usage"})
        if unknown:
            raise ValueError(f"stream_options: only include_usage is supported, not {unknown}")
        return self

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def wants_usage_chunk(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Request):
    # A string, a list of strings, token ids or a list of token id lists (lm-eval sends ids).
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, prompt: Any) -> Any:
        prompts = [prompt] if isinstance(prompt, str) or _is_ids(prompt) else prompt
        if not prompts:
            raise ValueError("prompt is an empty list: send at least one prompt")
        if len(prompts) > MAX_CHOICES:
            raise ValueError(f"{len(prompts)} prompts: at most {MAX_CHOICES} in one request")
        for one in prompts:
            if not one:
                raise ValueError("a prompt is empty: send at least one character or token")
            if len(one) > MAX_TEXT_CHARS:
                raise ValueError(f"a prompt has {len(one)} characters: at most {MAX_TEXT_CHARS}")
            if not isinstance(one, str) and any(t < 0 for t in one):
                raise ValueError("token ids are >= 0")
        return prompt

    @model_validator(mode="after")
    def _choices(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError(
                f"best_of={self.best_of} is not supported: every sample is returned (use n)"
            )
        if self.n * len(self.prompt_list()) > MAX_CHOICES:
            raise ValueError(f"n times the prompts is over {MAX_CHOICES} choices")
        return self

    def prompt_list(self) -> list[str | list[int]]:
        """The prompts in order: each a string or a list of token ids."""
        prompt = self.prompt
        return [prompt] if isinstance(prompt, str) or _is_ids(prompt) else list(prompt)


def _is_ids(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int)


# Fields the openai client writes into an assistant message it returns: a conversation sent
# back as it came is accepted while they are empty; with a value they would be ignored.
_EMPTY_MESSAGE_FIELDS = ("refusal", "audio", "function_call", "annotations", "reasoning_content")


class ChatMessage(BaseModel):
    # Undeclared fields are kept to be refused by name (``_roles``), never ignored.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_CALLS_IN)
    tool_call_id: str | None = Field(default=None, max_length=300)  # a tool result's call
    name: str | None = Field(default=None, max_length=300)

    @field_validator("content")
    @classmethod
    def _bounded(cls, content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(content, list) and len(content) > MAX_CONTENT_PARTS:
            raise ValueError(f"{len(content)} content parts: at most {MAX_CONTENT_PARTS}")
        if isinstance(content, str) and len(content) > MAX_TEXT_CHARS:
            raise ValueError(
                f"message content has {len(content)} characters: at most {MAX_TEXT_CHARS}"
            )
        return content

    @model_validator(mode="after")
    def _roles(self) -> ChatMessage:
        extra = {
            name: value
            for name, value in (self.model_extra or {}).items()
            if not (name in _EMPTY_MESSAGE_FIELDS and value in (None, "", [], {}))
        }
        if extra:
            raise ValueError(f"message fields this server does not honour: {sorted(extra)}")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(
                f"a {self.role} message needs content (only an assistant's tool "
                "calls may come without)"
            )
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

    def text(self) -> str:
        if self.content is None:  # an assistant message that only calls tools
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(
                    f"message content part {part!r} is not supported: only text parts are"
                )
            parts.append(part["text"])
        text = "".join(parts)
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(
                f"message content has {len(text)} characters: at most {MAX_TEXT_CHARS}"
            )
        return text


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    parallel_tool_calls: bool | None = None  # false: a required answer makes one call
    tools: list[Tool] | None = None  # ``tools.py``
    tool_choice: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_messages(self) -> ChatCompletionRequest:
        if not self.messages:
            raise ValueError("messages is empty: send at least one message")
        for msg in self.messages:
            msg.text()  # raises on non-text parts
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class AdapterLoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
