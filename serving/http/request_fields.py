"""Fields a request may carry besides the ones the schemas declare: none.

Every field of OpenAI's request spec and of vLLM's extensions that this server honours is
declared in ``schemas.py``; a field it does not honour is refused with a 400 that names it,
never ignored: OpenAI's own (``NOT_HONOURED``) with what to do instead, anything else as
unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields of OpenAI's (or vLLM's) request spec this server does not act on, with why.
NOT_HONOURED: dict[str, str] = {
    "functions": "function calling is not supported (OpenAI deprecated it for tools)",
    "function_call": "function calling is not supported (OpenAI deprecated it for tools)",
    "guided_grammar": "grammars are not supported: use guided_json, guided_regex or guided_choice",
    "structured_outputs": "use response_format, guided_json, guided_regex or guided_choice",
    "suffix": "insertion (a suffix after the completion) is not supported",
    "audio": "audio output is not supported: the models served are text-only",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "the models served have no reasoning-effort setting",
    "service_tier": "this server has one service tier",
    "web_search_options": "web search is not supported",
    "logprobs_mode": "logprobs are always of the model's raw distribution",
    "ignore_eos": "ignore_eos is not supported: set min_tokens instead",
    "use_beam_search": "beam search is not supported",
    "allowed_token_ids": "allowed_token_ids is not supported: use logit_bias",
    "bad_words": "bad_words is not supported: use logit_bias",
}


def refuse_extras(extra: Mapping[str, Any]) -> None:
    """A ``ValueError`` (400) naming each undeclared field of a request body."""
    if not extra:
        return
    reasons = []
    for name in sorted(extra):
        why = NOT_HONOURED.get(name)
        reasons.append(f"{name}: {why}" if why else f"{name}: unknown field")
    raise ValueError(
        "fields this server does not honour: "
        + "; ".join(reasons)
        + " (docs/serving.md lists the supported fields)"
    )
