"""OpenAI-compatible request and response bodies (completions, chat, models).

Error bodies are made in ``errors.py``.

Requests are strict about the values loradock acts on (ranges checked here, so a bad
value is a 400 that names the field) and tolerant of fields it ignores (``user``,
``stream_options``, penalties), which the ``openai`` client and other tools send.

Every size is bounded here too (prompt and message lengths, number of messages and stop
strings): fixed ceilings that no context fits, so nothing unbounded reaches a chat template or
a tokenizer. The limits that depend on the server's context (``max_tokens``, a prompt's
characters) are checked by the routes (``openai_routes.py``).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 200
MAX_TEXT_CHARS = 1_000_000  # a prompt or one message; the body limit usually binds first
MAX_MESSAGES = 1024
MAX_CONTENT_PARTS = 64
MAX_SEED = 2**63 - 1  # torch's generators take seeds in 0..2**63-1
# Below this a temperature is not "almost greedy" but an overflow: logits / 1e-40 are inf.
MIN_TEMPERATURE = 0.01


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)

    @field_validator("temperature")
    @classmethod
    def _sane_temperature(cls, temperature: float) -> float:
        if 0 < temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}: smaller "
                "values overflow the sampler"
            )
        return temperature

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"n={n} is not supported: loradock returns one choice (use n=1)")
        return n

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

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError(
                    f"prompt must be one string (got a list of {len(prompt)}): "
                    "send one request per prompt"
                )
            prompt = prompt[0]
        if not prompt:
            raise ValueError("prompt is empty: send at least one character")
        if len(prompt) > MAX_TEXT_CHARS:
            raise ValueError(f"prompt has {len(prompt)} characters: at most {MAX_TEXT_CHARS}")
        return prompt

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

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

    def text(self) -> str:
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

    @model_validator(mode="after")
    def _has_messages(self) -> ChatCompletionRequest:
        if not self.messages:
            raise ValueError("messages is empty: send at least one message")
        for msg in self.messages:
            msg.text()  # raises on non-text parts
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "loradock"
    parent: str | None = None
    root: str | None = None
    loaded: bool | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AdapterLoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
