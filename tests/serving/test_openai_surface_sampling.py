"""The PEFT engine's sampling surface, unit by unit: the checks, the logit processors (vLLM's
meanings), top-k / min-p, and logprobs of the raw distribution."""

from __future__ import annotations

import math

import pytest
import torch

from loradock.errors import RequestError
from loradock.serving.engines.base import SamplingParams
from loradock.serving.engines.peft.logprobs import prompt_logprobs, rows_logprobs
from loradock.serving.engines.peft.sampling import (
    adjust_logits,
    check_sampling,
    make_generator,
    sample_next,
)

LOGITS = torch.tensor([2.0, -1.0, 0.5, 1.0, 0.0])
EOS = {4}


@pytest.mark.parametrize(
    ("params", "output_ids", "expected"),
    [
        (SamplingParams(logit_bias=((1, 5.0),)), [], [2.0, 4.0, 0.5, 1.0, 0.0]),
        # EOS (4) and the stop token (2) masked until min_tokens
        (
            SamplingParams(min_tokens=2, stop_token_ids=(2,)),
            [3],
            [2.0, -1.0, -math.inf, 1.0, -math.inf],
        ),
        (SamplingParams(min_tokens=1), [3], LOGITS.tolist()),
        # prompt [0] and output [1]: positive divided, negative multiplied
        (SamplingParams(repetition_penalty=2.0), [1], [1.0, -2.0, 0.5, 1.0, 0.0]),
        # output tokens only: frequency per occurrence, presence once
        (
            SamplingParams(frequency_penalty=0.5, presence_penalty=1.0),
            [3, 3, 2],
            [2.0, -1.0, -1.0, -1.0, 0.0],
        ),
    ],
    ids=["logit_bias", "min_tokens-masks-ends", "min_tokens-reached", "repetition", "penalties"],
)
def test_logit_processors(params, output_ids, expected):
    row = adjust_logits(LOGITS, params, prompt_ids=[0], output_ids=output_ids, end_ids=EOS)
    assert row.tolist() == pytest.approx(expected)
    assert LOGITS.tolist() == [2.0, -1.0, 0.5, 1.0, 0.0]  # the model's row is left alone


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        (SamplingParams(top_k=2), {0, 3}),
        # p >= 0.3 x the best's: token 3 (e**-1 = 0.37 of it) stays, token 2 (0.22) goes
        (SamplingParams(min_p=0.3), {0, 3}),
        (SamplingParams(top_k=1), {0}),
    ],
    ids=["top_k", "min_p", "top_k=1"],
)
def test_sampler_keeps_only_allowed_tokens(params, allowed):
    gen = make_generator(0)
    drawn = {sample_next(LOGITS, params, gen) for _ in range(200)}
    assert drawn == allowed  # seeded: 200 draws see both of two likely tokens


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (SamplingParams(top_k=-1), "top_k"),
        (SamplingParams(min_p=1.5), "min_p"),
        (SamplingParams(presence_penalty=3.0), "presence_penalty"),
        (SamplingParams(repetition_penalty=0.0), "repetition_penalty"),
        (SamplingParams(logit_bias=((1, 200.0),)), "logit_bias[1]"),
        (SamplingParams(logit_bias=tuple((i, 1.0) for i in range(301))), "at most 300"),
        (SamplingParams(stop_token_ids=(-1,)), "stop_token_ids"),
        (SamplingParams(min_tokens=20, max_tokens=10), "min_tokens"),
        (SamplingParams(logprobs=21), "logprobs"),
        (SamplingParams(prompt_logprobs=-1), "prompt_logprobs"),
    ],
)
def test_out_of_range_is_refused(params, fragment):
    with pytest.raises(RequestError, match="Invalid sampling parameters") as info:
        check_sampling(params)
    assert fragment in str(info.value)


def test_logprobs_are_of_the_raw_distribution():
    logprobs = torch.log_softmax(LOGITS, dim=-1)
    step = rows_logprobs(torch.stack([LOGITS.flip(0), LOGITS]), [1], [2])
    entry = step[1].entry(3, top=2)
    assert entry.logprob == pytest.approx(float(logprobs[3]))
    assert [t for t, _ in entry.top] == [0, 3] and len(step) == 1
    assert step[1].entry(3, top=0).top == ()
    ids = [0, 3, 1]
    rows = torch.stack([LOGITS, LOGITS.flip(0), LOGITS])
    got = prompt_logprobs(rows, ids, top=1)
    assert got[0] is None and len(got) == 3 and [t for t, _ in got[1].top] == [0]
    assert got[1].logprob == pytest.approx(float(logprobs[3]))
    assert got[2].logprob == pytest.approx(float(torch.log_softmax(LOGITS.flip(0), -1)[1]))
