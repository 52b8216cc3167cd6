"""``/v1/completions`` and ``/v1/chat/completions``, streamed over SSE or returned whole.

Flow: schema -> limits -> resolver (registry) -> engine -> chunks back. The first chunk is
awaited before the response starts, so every error the engine raises up front (prompt too
long, queue full, adapter incompatible) is a proper HTTP status, not an error inside a 200
stream.

Before any tokenising, a prompt's characters are checked against the context (no tokenizer
puts more than ``MAX_CHARS_PER_TOKEN`` characters in a token of ordinary text), and
``max_tokens`` against the context. A long prompt is tokenised in a worker thread, so the
event loop keeps serving; a short one inline, where a thread hop would cost more than it saves.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from loradock.errors import RequestError
from loradock.serving.engines.base import GenerationChunk, GenerationRequest, SamplingParams
from loradock.serving.http.errors import error_payload
from loradock.serving.http.schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from loradock.serving.http.state import ServerState, state_of

router = APIRouter()
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
MAX_CHARS_PER_TOKEN = 32
# Above this many characters a prompt is tokenised in a worker thread. Measured on the
# SmolLM2 tokenizer on this project's 2-core machine: 2,000 characters take ~4 ms to render
# and tokenise, a thread hop ~0.3 ms; below it, the hop is the bigger cost.
INLINE_TOKENIZE_CHARS = 2_000


class _Run:
    """One request in flight: its chunk stream plus what metrics and ``usage`` need."""

    def __init__(self, state: ServerState, route: str, kind: str, stream: AsyncIterator):
        self.state, self.route, self.kind, self.stream = state, route, kind, stream
        self.started = time.perf_counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def record(self, chunk: GenerationChunk) -> GenerationChunk:
        self.prompt_tokens = chunk.prompt_tokens or self.prompt_tokens
        self.completion_tokens = chunk.completion_tokens
        self.finish_reason = chunk.finish_reason or self.finish_reason
        return chunk

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )

    def done(self, status: str = "200") -> None:
        m = self.state.metrics
        m.latency.labels(self.route).observe(time.perf_counter() - self.started)
        m.requests.labels(self.route, status).inc()
        m.prompt_tokens.labels(self.kind).inc(self.prompt_tokens)
        m.completion_tokens.labels(self.kind).inc(self.completion_tokens)


async def _start(
    state: ServerState,
    route: str,
    model: str,
    prompt: str | None,
    sampling: SamplingParams,
    *,
    stream: bool,
    messages: list[dict[str, str]] | None = None,
) -> tuple[_Run, GenerationChunk]:
    chars = _check_sizes(state, prompt, messages, sampling)
    known, spec = state.resolver.cached(model)
    if not known:  # the store is read in a worker thread, never on the event loop
        spec = await run_in_threadpool(state.resolver.resolve, model)
    request = GenerationRequest(
        request_id=uuid.uuid4().hex,
        prompt=prompt,
        sampling=sampling,
        adapter=spec,
        stream=stream,
        messages=messages,
    )
    # Engines that tokenise in this process expose their PromptFrontend as ``frontend``; the
    # ids computed here are taken as they are (an engine in another process tokenises here).
    frontend = getattr(state.engine, "frontend", None)
    if chars > INLINE_TOKENIZE_CHARS and frontend is not None:
        request.prompt_token_ids = await run_in_threadpool(frontend.encode, request)
    run = _Run(state, route, "base" if spec is None else "adapter", None)
    run.stream = state.engine.generate(request)
    first = await run.stream.__anext__()
    state.metrics.ttft.labels(route).observe(time.perf_counter() - run.started)
    return run, run.record(first)


def _check_sizes(
    state: ServerState,
    prompt: str | None,
    messages: list[dict[str, str]] | None,
    sampling: SamplingParams,
) -> int:
    """The prompt's characters, checked against the context before anything tokenises it."""
    context = state.engine.capabilities.max_model_len
    if sampling.max_tokens > context:
        raise RequestError(
            f"max_tokens={sampling.max_tokens} is over this server's context of {context} "
            "tokens (max_model_len): ask for fewer."
        )
    chars = len(prompt) if prompt is not None else sum(len(m["content"]) for m in messages or ())
    if chars > context * MAX_CHARS_PER_TOKEN:
        raise RequestError(
            f"The prompt has {chars} characters, more than a context of {context} tokens "
            f"(max_model_len) can hold ({context * MAX_CHARS_PER_TOKEN} characters at most). "
            "Shorten the prompt."
        )
    return chars


def _sampling(body: Any, max_tokens: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
    )


def _json(payload: Any) -> Response:
    """A response model as JSON, serialized by pydantic-core in one call (a returned model
    goes through FastAPI's ``jsonable_encoder`` first, field by field in Python)."""
    return Response(payload.model_dump_json(), media_type="application/json")


def _sse(payload: Any) -> str:
    data = payload.model_dump_json() if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"data: {data}\n\n"


async def _events(run: _Run, first: GenerationChunk, render) -> AsyncIterator[str]:
    """SSE frames for every chunk; an error mid-stream becomes an error event; then [DONE]."""
    status = "200"
    try:
        for frame in render(first):
            yield frame
        if first.finish_reason is None:
            async for chunk in run.stream:
                for frame in render(run.record(chunk)):
                    yield frame
    except Exception as exc:
        status = str(getattr(exc, "http_status", 500))
        yield _sse(error_payload(exc, run.state.redact))
    finally:
        await run.stream.aclose()
        run.done(status)
    yield "data: [DONE]\n\n"


async def _collect(run: _Run, first: GenerationChunk) -> str:
    parts = [first.text]
    if first.finish_reason is None:
        async for chunk in run.stream:
            parts.append(run.record(chunk).text)
    run.done()
    return "".join(parts)


def _wants_usage_chunk(body: Any) -> bool:
    options = (body.model_extra or {}).get("stream_options") or {}
    return isinstance(options, dict) and bool(options.get("include_usage"))


@router.post(COMPLETIONS)
async def completions(body: CompletionRequest, state: ServerState = Depends(state_of)):
    prompt = body.prompt_text()
    sampling = _sampling(body, body.max_tokens or 16)
    run, first = await _start(
        state, COMPLETIONS, body.model, prompt, sampling, stream=bool(body.stream)
    )
    rid = f"cmpl-{uuid.uuid4().hex}"
    if not body.stream:
        text = await _collect(run, first)
        choice = CompletionChoice(
            text=(prompt + text) if body.echo else text, finish_reason=run.finish_reason
        )
        return _json(
            CompletionResponse(id=rid, model=body.model, choices=[choice], usage=run.usage())
        )

    def render(chunk: GenerationChunk):
        last = chunk.finish_reason is not None
        yield _sse(
            CompletionResponse(
                id=rid,
                model=body.model,
                choices=[CompletionChoice(text=chunk.text, finish_reason=chunk.finish_reason)],
                usage=run.usage() if last else None,
            )
        )

    return StreamingResponse(_events(run, first, render), media_type="text/event-stream")


@router.post(CHAT)
async def chat_completions(body: ChatCompletionRequest, state: ServerState = Depends(state_of)):
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    limit = body.token_limit() or state.engine.capabilities.max_model_len
    sampling = _sampling(body, limit)
    run, first = await _start(
        state, CHAT, body.model, None, sampling, stream=bool(body.stream), messages=messages
    )
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    if not body.stream:
        text = await _collect(run, first)
        choice = ChatChoice(
            message=ChatResponseMessage(content=text), finish_reason=run.finish_reason
        )
        return _json(
            ChatCompletionResponse(id=rid, model=body.model, choices=[choice], usage=run.usage())
        )
    usage_chunk = _wants_usage_chunk(body)
    opened = False

    def render(chunk: GenerationChunk):
        nonlocal opened
        if not opened:
            opened = True
            delta = ChatDelta(role="assistant", content="")
            yield _sse(
                ChatCompletionChunk(
                    id=rid, model=body.model, choices=[ChatChunkChoice(delta=delta)]
                )
            )
        if chunk.text:
            delta = ChatDelta(content=chunk.text)
            yield _sse(
                ChatCompletionChunk(
                    id=rid, model=body.model, choices=[ChatChunkChoice(delta=delta)]
                )
            )
        if chunk.finish_reason is not None:
            end = ChatChunkChoice(delta=ChatDelta(), finish_reason=chunk.finish_reason)
            yield _sse(
                ChatCompletionChunk(
                    id=rid,
                    model=body.model,
                    choices=[end],
                    usage=None if usage_chunk else run.usage(),
                )
            )
            if usage_chunk:
                yield _sse(
                    ChatCompletionChunk(id=rid, model=body.model, choices=[], usage=run.usage())
                )

    return StreamingResponse(_events(run, first, render), media_type="text/event-stream")
