"""``/tokenize``, ``/detokenize`` and ``/tokenizer_info`` in vLLM's shapes (API key).

lm-eval's remote tokenizer (``local-completions`` with ``tokenizer_backend=remote``, picked
automatically when these answer) counts and splits prompts through them, so a harness needs
no copy of the model's tokenizer. Ids and text are those of the engine's front end: what the
completion routes run. ``model`` is accepted and checked by the resolver like a completion's
(the base and every adapter share the base's tokenizer).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from loradock.errors import RequestError
from loradock.serving.http.schemas import MAX_MESSAGES, MAX_TEXT_CHARS, ChatMessage
from loradock.serving.http.state import ServerState, state_of

router = APIRouter()
MAX_DETOKENIZE_IDS = 1_000_000


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=300)
    prompt: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=MAX_MESSAGES)
    add_special_tokens: bool | None = None  # prompt: True; messages: False (the template's)
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=300)
    tokens: list[int] = Field(max_length=MAX_DETOKENIZE_IDS)


async def _check_model(state: ServerState, model: str | None) -> None:
    if model is not None:
        known, _ = state.resolver.cached(model)
        if not known:
            await run_in_threadpool(state.resolver.resolve, model)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, state: ServerState = Depends(state_of)) -> dict:
    await _check_model(state, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise RequestError("Send exactly one of prompt and messages.")
    tokenizer = state.engine.frontend.tokenizer
    if body.messages is not None:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=body.add_generation_prompt
        )
        special = bool(body.add_special_tokens)
    else:
        text = body.prompt
        special = body.add_special_tokens is not False
    ids = await run_in_threadpool(lambda: tokenizer(text, add_special_tokens=special)["input_ids"])
    return {
        "count": len(ids),
        "max_model_len": state.engine.capabilities.max_model_len,
        "tokens": ids,
        "token_strs": tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None,
    }


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, state: ServerState = Depends(state_of)) -> dict:
    await _check_model(state, body.model)
    tokenizer = state.engine.frontend.tokenizer
    bad = [t for t in body.tokens if not 0 <= t < len(tokenizer)]
    if bad:
        raise RequestError(
            f"tokens has id {bad[0]}: the vocabulary's ids are 0..{len(tokenizer) - 1}"
        )
    return {"prompt": await run_in_threadpool(tokenizer.decode, body.tokens)}


@router.get("/tokenizer_info")
async def tokenizer_info(state: ServerState = Depends(state_of)) -> dict[str, Any]:
    tokenizer = state.engine.frontend.tokenizer
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "eos_token": tokenizer.eos_token,
        "bos_token": tokenizer.bos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template": tokenizer.chat_template,
        "model_max_length": state.engine.capabilities.max_model_len,
    }
