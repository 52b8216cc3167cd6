"""A request body's prompts as engine requests: sampling options, token ids, limits.

Each prompt is tokenised here by the engine's front end (a long one in a worker thread, so
the event loop keeps serving; a short one inline, where a thread hop costs more than it
saves), so every limit that depends on tokens is a 400 before the engine sees the request:
token ids (a prompt's, ``logit_bias``'s, ``stop_token_ids``) must be in the vocabulary, and an
explicit ``max_tokens`` must fit in the context the prompt leaves, as OpenAI and vLLM answer
(without one, the answer may run to the end of the context).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi.concurrency import run_in_threadpool

from loradock.errors import RequestError
from loradock.serving.engines.base import GenerationRequest, SamplingParams

MAX_CHARS_PER_TOKEN = 32  # no tokenizer puts more characters in a token of ordinary text
# Above this many characters a prompt is tokenised in a worker thread. Measured on the
# SmolLM2 tokenizer on this project's 2-core machine: 2,000 characters take ~4 ms to render
# and tokenise, a thread hop ~0.3 ms; below it, the hop is the bigger cost.
INLINE_TOKENIZE_CHARS = 2_000


def sampling_of(
    body: Any, *, logprobs: int | None = None, prompt_logprobs: int | None = None
) -> SamplingParams:
    """The body's sampling options (``max_tokens`` is set by :func:`prepare`)."""
    return SamplingParams(
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
        top_k=max(body.top_k, 0),
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=tuple((int(k), v) for k, v in (body.logit_bias or {}).items()),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        min_tokens=body.min_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )


async def prepare(
    engine: Any, request: GenerationRequest, *, max_tokens: int | None, default: int | None
) -> GenerationRequest:
    """``request`` with its prompt's ids and ``max_tokens`` set, every token limit checked:
    ``max_tokens`` is the body's (a 400 when it does not fit), else ``default`` (or the whole
    context) within the room the prompt leaves."""
    context = engine.capabilities.max_model_len
    if max_tokens is not None and max_tokens >= context:
        raise RequestError(
            f"max_tokens={max_tokens} is over this server's context of {context} tokens "
            "(max_model_len) with the prompt: ask for fewer."
        )
    _check_chars(request, context)
    frontend = engine.frontend
    if _chars(request) > INLINE_TOKENIZE_CHARS:
        ids = await run_in_threadpool(frontend.encode, request)
    else:
        ids = frontend.encode(request)
    vocab = len(frontend.tokenizer)
    _check_ids(request.sampling, ids, vocab)
    room = context - len(ids)
    if max_tokens is not None and max_tokens > room:
        raise RequestError(
            f"max_tokens={max_tokens} plus the prompt's {len(ids)} tokens is over this "
            f"server's context of {context} tokens (max_model_len): ask for at most {room}."
        )
    limit = max_tokens if max_tokens is not None else min(default or room, room)
    if request.sampling.min_tokens > limit:
        raise RequestError(f"min_tokens={request.sampling.min_tokens} is over max_tokens={limit}")
    sampling = replace(request.sampling, max_tokens=limit)
    return replace(request, prompt_token_ids=ids, sampling=sampling)


def _chars(request: GenerationRequest) -> int:
    if request.prompt is not None:
        return len(request.prompt)
    return sum(len(m["content"]) for m in request.messages or ())


def _check_chars(request: GenerationRequest, context: int) -> None:
    """The prompt's characters against the context, before anything tokenises it."""
    chars = _chars(request)
    if chars > context * MAX_CHARS_PER_TOKEN:
        raise RequestError(
            f"The prompt has {chars} characters, more than a context of {context} tokens "
            f"(max_model_len) can hold ({context * MAX_CHARS_PER_TOKEN} characters at most). "
            "Shorten the prompt."
        )


def _check_ids(sampling: SamplingParams, prompt_ids: list[int], vocab: int) -> None:
    named = {
        "prompt": prompt_ids,
        "logit_bias": [t for t, _ in sampling.logit_bias],
        "stop_token_ids": sampling.stop_token_ids,
    }
    for field, ids in named.items():
        bad = [t for t in ids if t >= vocab]
        if bad:
            raise RequestError(
                f"{field} has token id {bad[0]}: the vocabulary's ids are 0..{vocab - 1}"
            )
