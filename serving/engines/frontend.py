"""The prompt front end every engine shares: a request's prompt rendered and tokenised once.

A completion's text is tokenised as the model's tokenizer does by default (BOS added where the
tokenizer adds one). A chat is rendered by the model's chat template, which already writes
every special token it wants (Llama 3's emits ``bos_token``), so its text is tokenised with
``add_special_tokens=False``, as vLLM does: adding them again would give a double BOS.
"""

from __future__ import annotations

from typing import Any

from loradock.errors import RequestError
from loradock.serving.engines.base import GenerationRequest


def check_prompt_fits(n_tokens: int, max_model_len: int) -> None:
    """A 400 before any work when a prompt leaves no room to generate."""
    if n_tokens >= max_model_len:
        raise RequestError(
            f"The prompt is {n_tokens} tokens; this server's context is {max_model_len} tokens "
            f"(max_model_len), leaving no room to generate. Shorten the prompt."
        )


class PromptFrontend:
    """Turns a ``GenerationRequest`` into the token ids an engine runs, checked to fit."""

    def __init__(self, tokenizer: Any, max_model_len: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt's ids (``request.prompt_token_ids`` when the caller set them)."""
        if request.prompt_token_ids is not None:
            ids = list(request.prompt_token_ids)
        elif request.messages is not None:
            text = self.render_chat(request.messages)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(request.prompt)["input_ids"]
        check_prompt_fits(len(ids), self.max_model_len)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])
