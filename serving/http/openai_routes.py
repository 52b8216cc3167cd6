"""``/v1/completions`` and ``/v1/chat/completions``, streamed over SSE or returned whole.

Flow: schema -> resolver (registry) -> prompts tokenised and checked (``prompts.py``) ->
one engine request per choice (``choices.py``: ``n`` samples of each prompt) -> chunks back.
Every choice's first chunk is awaited before the response starts, so every error the engine
raises up front (prompt too long, queue full, adapter incompatible) is a proper HTTP status,
not an error inside a 200 stream. Logprobs are rendered by ``logprob_format.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from loradock.serving.engines.base import GenerationChunk, GenerationRequest
from loradock.serving.http.choices import Choice, close_all, open_all, rest, samples
from loradock.serving.http.errors import error_payload
from loradock.serving.http.lifetime import Lifetime
from loradock.serving.http.logprob_format import chat_logprobs, completion_logprobs, token_texts
from loradock.serving.http.prompts import prepare, sampling_of
from loradock.serving.http.responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    CompletionChoice,
    CompletionResponse,
    Usage,
)
from loradock.serving.http.schemas import ChatCompletionRequest, CompletionRequest
from loradock.serving.http.state import ServerState, state_of
from loradock.serving.http.structured import structured_of
from loradock.serving.http.tools import (
    ToolCallDelta,
    ToolPlan,
    chat_constraint,
    finish_reason,
    message_dict,
    plan_tools,
    prompt_ids,
    tool_calls,
)

router = APIRouter()
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for completions


class _Run:
    """One HTTP request in flight: its choices plus what metrics and ``usage`` need."""

    def __init__(self, state: ServerState, route: str, kind: str, choices: list[Choice]):
        self.state, self.route, self.kind, self.choices = state, route, kind, choices
        self.started = time.perf_counter()

    def usage(self) -> Usage:
        prompt = sum(c.prompt_tokens for c in self.choices if c.first_of_prompt)
        completion = sum(c.completion_tokens for c in self.choices)
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    def done(self, status: str = "200") -> None:
        m, usage = self.state.metrics, self.usage()
        m.latency.labels(self.route).observe(time.perf_counter() - self.started)
        m.requests.labels(self.route, status).inc()
        m.prompt_tokens.labels(self.kind).inc(usage.prompt_tokens)
        m.completion_tokens.labels(self.kind).inc(usage.completion_tokens)


async def _start(
    state: ServerState,
    route: str,
    http: Request,
    body: Any,
    prompts: list[GenerationRequest],
    *,
    max_tokens: int | None,
    default: int | None,
) -> _Run:
    """Resolve the model, prepare every prompt, open every choice's stream."""
    known, spec = state.resolver.cached(body.model)
    if not known:  # the store is read in a worker thread, never on the event loop
        spec = await run_in_threadpool(state.resolver.resolve, body.model)
    choices: list[Choice] = []
    for p, request in enumerate(prompts):
        request.adapter, request.stream = spec, bool(body.stream)
        ready = await prepare(state.engine, request, max_tokens=max_tokens, default=default)
        choices += samples(ready, body.n, p * body.n)
    run = _Run(state, route, "base" if spec is None else "adapter", choices)
    timeout = state.config.peft.request_timeout

    def open_stream(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        # Closed (cancelled in the engine) past the deadline or when the client leaves.
        life = Lifetime.of(http, timeout)
        return life.guard(state.engine.generate(request), streaming=request.stream)

    await open_all(choices, open_stream)
    state.metrics.ttft.labels(route).observe(time.perf_counter() - run.started)
    return run


def _new_request(**parts: Any) -> GenerationRequest:
    return GenerationRequest(request_id=uuid.uuid4().hex, **parts)


def _json(payload: Any) -> Response:
    """A response model as JSON, serialized by pydantic-core in one call (a returned model
    goes through FastAPI's ``jsonable_encoder`` first, field by field in Python)."""
    return Response(payload.model_dump_json(), media_type="application/json")


def _sse(payload: Any) -> str:
    data = payload.model_dump_json() if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"data: {data}\n\n"


async def _events(run: _Run, render: Callable, end: Callable) -> AsyncIterator[str]:
    """SSE frames for every choice's chunks; an error mid-stream becomes an error event;
    then ``end``'s frames (a usage chunk) and [DONE]."""
    status = "200"
    try:
        for choice in run.choices:
            for frame in render(choice, choice.first):
                yield frame
        async for choice, chunk in rest(run.choices):
            for frame in render(choice, chunk):
                yield frame
        for frame in end():
            yield frame
    except Exception as exc:
        status = str(getattr(exc, "http_status", 500))
        yield _sse(error_payload(exc, run.state.redact))
    finally:
        await close_all(run.choices)
        run.done(status)
    yield "data: [DONE]\n\n"


async def _collect(run: _Run) -> None:
    try:
        async for _ in rest(run.choices):
            pass
    finally:
        await close_all(run.choices)
    run.done()


def _usage_frames(run: _Run, body: Any, make: Callable[..., Any]) -> Callable:
    """The usage chunk (``stream_options.include_usage``) after every choice has finished."""

    def end():
        if body.wants_usage_chunk():
            yield _sse(make(choices=[], usage=run.usage()))

    return end


def _last_usage(run: _Run, body: Any, chunk: GenerationChunk) -> Usage | None:
    """Without a usage chunk, ``usage`` rides on the chunk that ends the last choice."""
    last = chunk.finish_reason is not None and run.finished()
    return run.usage() if last and not body.wants_usage_chunk() else None


@router.post(COMPLETIONS)
async def completions(
    body: CompletionRequest, http: Request, state: ServerState = Depends(state_of)
):
    tokenizer = state.engine.frontend.tokenizer
    structured = structured_of(body)
    prompts = []
    for p in body.prompt_list():
        sampling = _completion_sampling(body)
        if isinstance(p, str):
            prompts.append(_new_request(prompt=p, sampling=sampling, structured=structured))
            continue
        # Token ids: the engine runs the ids; the text is there to echo it.
        text = tokenizer.decode(p) if body.echo else None
        prompts.append(
            _new_request(
                prompt=text, prompt_token_ids=list(p), sampling=sampling, structured=structured
            )
        )
    run = await _start(
        state,
        COMPLETIONS,
        http,
        body,
        prompts,
        max_tokens=body.max_tokens,
        default=DEFAULT_COMPLETION_TOKENS,
    )
    rid, texts = f"cmpl-{uuid.uuid4().hex}", token_texts(tokenizer)
    if not body.stream:
        await _collect(run)
        choices = [_completion_choice(c, body, texts) for c in run.choices]
        return _json(
            CompletionResponse(id=rid, model=body.model, choices=choices, usage=run.usage())
        )

    def make(**parts: Any) -> CompletionResponse:
        return CompletionResponse(id=rid, model=body.model, **parts)

    def render(choice: Choice, chunk: GenerationChunk):
        echo = _echo(choice, body, texts) if chunk is choice.first else ("", None)
        text, logprobs = echo[0] + chunk.text, echo[1]
        if chunk.logprobs is not None:
            mine = completion_logprobs(
                texts, chunk.logprobs, chunk.token_ids, choice.sent_chars + len(echo[0])
            )
            logprobs = _joined(logprobs, mine)
        choice.sent_chars += len(text)
        one = CompletionChoice(
            index=choice.index, text=text, logprobs=logprobs, finish_reason=chunk.finish_reason
        )
        yield _sse(make(choices=[one], usage=_last_usage(run, body, chunk)))

    events = _events(run, render, _usage_frames(run, body, make))
    return StreamingResponse(events, media_type="text/event-stream")


def _completion_sampling(body: CompletionRequest):
    echo_logprobs = body.logprobs if body.echo else None
    return sampling_of(body, logprobs=body.logprobs, prompt_logprobs=echo_logprobs)


def _echo(choice: Choice, body: CompletionRequest, texts) -> tuple[str, Any]:
    """With ``echo``: the prompt's text and (with ``logprobs``) its tokens' logprobs."""
    if not body.echo:
        return "", None
    prompt, first = choice.request.prompt or "", choice.first
    if body.logprobs is None or first.prompt_logprobs is None:
        return prompt, None
    return prompt, completion_logprobs(texts, first.prompt_logprobs, first.prompt_token_ids)


def _joined(head: Any, tail: Any) -> Any:
    if head is None:
        return tail
    for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        getattr(head, name).extend(getattr(tail, name))
    return head


def _completion_choice(choice: Choice, body: CompletionRequest, texts) -> CompletionChoice:
    prompt, logprobs = _echo(choice, body, texts)
    if body.logprobs is not None:
        mine = completion_logprobs(texts, choice.logprobs, choice.token_ids, len(prompt))
        logprobs = _joined(logprobs, mine)
    return CompletionChoice(
        index=choice.index,
        text=prompt + choice.text(),
        logprobs=logprobs,
        finish_reason=choice.finish_reason,
    )


def _tool_delta(plan: ToolPlan, text: str, reason: str) -> tuple[ChatDelta, str | None]:
    """A tool-using answer's one delta: its content and calls (OpenAI's shape, indexed)."""
    content, calls = tool_calls(plan, text)
    deltas = [ToolCallDelta(index=i, **call.model_dump()) for i, call in enumerate(calls)]
    return ChatDelta(content=content, tool_calls=deltas or None), finish_reason(reason, calls)


def _chat_choice(c: Choice, plan: Any, texts: Any) -> ChatChoice:
    """A whole answer as a chat choice (``texts``: None unless logprobs were asked for)."""
    content, calls = (c.text(), []) if plan is None else tool_calls(plan, c.text())
    return ChatChoice(
        index=c.index,
        message=ChatResponseMessage(content=content, tool_calls=calls or None),
        logprobs=chat_logprobs(texts, c.logprobs) if texts is not None else None,
        finish_reason=finish_reason(c.finish_reason, calls),
    )


@router.post(CHAT)
async def chat_completions(
    body: ChatCompletionRequest, http: Request, state: ServerState = Depends(state_of)
):
    tokenizer = state.engine.frontend.tokenizer
    plan = plan_tools(body.tools, body.tool_choice, tokenizer, parallel=body.parallel_tool_calls)
    messages = [message_dict(m) for m in body.messages]
    top = (body.top_logprobs or 0) if body.logprobs else None
    prompt = _new_request(
        prompt=None,
        messages=messages,
        sampling=sampling_of(body, logprobs=top),
        structured=chat_constraint(body, plan, structured_of(body)),
        prompt_token_ids=prompt_ids(tokenizer, messages, plan),
    )
    run = await _start(
        state, CHAT, http, body, [prompt], max_tokens=body.token_limit(), default=None
    )
    rid, texts = f"chatcmpl-{uuid.uuid4().hex}", token_texts(state.engine.frontend.tokenizer)
    if not body.stream:
        await _collect(run)
        choices = [_chat_choice(c, plan, texts if body.logprobs else None) for c in run.choices]
        return _json(
            ChatCompletionResponse(id=rid, model=body.model, choices=choices, usage=run.usage())
        )

    def make(**parts: Any) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=rid, model=body.model, **parts)

    def render(choice: Choice, chunk: GenerationChunk):
        if chunk is choice.first:
            opening = ChatChunkChoice(
                index=choice.index, delta=ChatDelta(role="assistant", content="")
            )
            yield _sse(make(choices=[opening]))
        # With tools the answer is sent once whole (its calls parsed): ``_tool_delta``.
        if (chunk.text and plan is None) or chunk.logprobs:
            logprobs = chat_logprobs(texts, chunk.logprobs) if chunk.logprobs else None
            delta = ChatDelta(content=chunk.text if plan is None else None)
            yield _sse(
                make(choices=[ChatChunkChoice(index=choice.index, delta=delta, logprobs=logprobs)])
            )
        reason = chunk.finish_reason
        if reason is not None and plan is not None:
            delta, reason = _tool_delta(plan, choice.text(), reason)
            yield _sse(make(choices=[ChatChunkChoice(index=choice.index, delta=delta)]))
        if reason is not None:
            end = ChatChunkChoice(index=choice.index, delta=ChatDelta(), finish_reason=reason)
            yield _sse(make(choices=[end], usage=_last_usage(run, body, chunk)))

    events = _events(run, render, _usage_frames(run, body, make))
    return StreamingResponse(events, media_type="text/event-stream")
