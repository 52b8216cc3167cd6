"""The reference reply as a draft for greedy generation: rows whose reply greedy decoding
would reproduce need no generation.

The perplexity pass runs the model teacher-forced over prompt + reference, so it already holds
the greedy token (``argmax`` of the logits) at every reply position. Where that token equals
the reference's next token at every position up to and including the first token generation
stops on (or up to ``max_new_tokens`` tokens when the reference is longer), greedy generation
would emit exactly those tokens: speculative decoding's acceptance rule, with the reference as
the draft. The result equals plain greedy generation up to floating-point ties: the
teacher-forced pass (right padded, one forward) and ``generate`` (left padded, cached
attention) sum in different orders, so two near-equal logits may rank differently.

The shortcut holds only while a greedy step is a plain ``argmax``: a generation config that
reshapes the logits (repetition penalty, banned words, a minimum length...) or stops on
anything but its end-of-sequence ids turns it off (:func:`greedy_is_argmax`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Generation-config fields that make ``generate``'s greedy step differ from ``argmax`` of the
# model's logits (a logits processor or beam search) or stop it on more than the end-of-sequence
# ids, each with the values that leave it off.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "guidance_scale": (None, 1, 1.0),
    "sequence_bias": (None,),
    "encoder_repetition_penalty": (None, 1.0),
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []),
    "num_beams": (None, 1),
    "penalty_alpha": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
}


def greedy_is_argmax(generation_config: Any) -> bool:
    """Whether ``generate(do_sample=False)`` under this config picks ``argmax`` of the logits
    and stops only on the end-of-sequence ids or the token budget."""
    return all(getattr(generation_config, name, None) in off for name, off in _NEUTRAL.items())


def stop_ids(generation_config: Any) -> frozenset[int]:
    """The token ids greedy generation stops on (the config's ``eos_token_id``: one, a list or
    none)."""
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)


def draft(reply_ids: Sequence[int], stops: frozenset[int], max_new_tokens: int) -> list[int] | None:
    """The tokens greedy generation emits if it follows the reference: through the first stop
    token, at most ``max_new_tokens``. ``None`` when the reference ends before either (the chat
    template wrote no stop token), as generation would go on past it."""
    for n, token in enumerate(reply_ids[:max_new_tokens], start=1):
        if token in stops:
            return list(reply_ids[:n])
    return list(reply_ids[:max_new_tokens]) if len(reply_ids) >= max_new_tokens else None


def accepted_drafts(
    generation_config: Any,
    replies: Sequence[Sequence[int]],
    greedy: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
) -> list[list[int] | None]:
    """Per row, the tokens greedy generation would emit when the greedy tokens of the
    teacher-forced pass (``greedy[i][k]``: argmax at the position predicting ``replies[i][k]``)
    follow the whole draft; ``None`` for the rows that must be generated."""
    if not greedy_is_argmax(generation_config):
        return [None] * len(replies)
    stops = stop_ids(generation_config)
    accepted: list[list[int] | None] = []
    for reply, argmax in zip(replies, greedy, strict=True):
        tokens = draft(reply, stops, max_new_tokens)
        accepted.append(tokens if tokens is not None and argmax[: len(tokens)] == tokens else None)
    return accepted
