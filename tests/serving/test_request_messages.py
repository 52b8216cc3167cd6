"""Chat messages as OpenAI's client sends them back: empty client-side fields accepted, any
field the server would ignore refused by name (no server: the request schema alone)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loradock.serving.http.schemas import ChatCompletionRequest

ANSWER = {"role": "assistant", "content": "2024-03-03"}


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({}, None),
        # what openai's ChatCompletionMessage.model_dump() writes for a plain answer
        ({"refusal": None, "audio": None, "function_call": None, "annotations": []}, None),
        ({"reasoning_content": ""}, None),
        ({"refusal": "I cannot"}, "refusal"),
        ({"annotations": [{"type": "url_citation"}]}, "annotations"),
        ({"weight": 2}, "weight"),
        ({"refusal": None, "cache_control": {"type": "ephemeral"}}, "cache_control"),
    ],
    ids=["plain", "sent-back", "empty-reasoning", "refusal", "annotations", "unknown", "mixed"],
)
def test_message_fields(extra, refused):
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Normalise 3 March 2024"}, {**ANSWER, **extra}],
    }
    if refused is None:
        assert ChatCompletionRequest.model_validate(body).messages[1].content == ANSWER["content"]
        return
    with pytest.raises(ValidationError, match=f"does not honour: \\['{refused}'\\]"):
        ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize(
    ("options", "refused"),
    [({"include_usage": True}, False), ({"include_usage": False}, False), ({"x": True}, True)],
    ids=["usage", "no-usage", "unknown"],
)
def test_stream_options_keys(options, refused):
    body = {"model": "m", "stream": True, "stream_options": options, "messages": [ANSWER]}
    if not refused:
        ChatCompletionRequest.model_validate(body)
        return
    with pytest.raises(ValidationError, match="only include_usage"):
        ChatCompletionRequest.model_validate(body)
