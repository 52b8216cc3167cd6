"""A request's ``n`` choices share one prefill on the PEFT engine: sequences sent together with
the same prompt through the same adapter are computed as one row of the prefill forward, and
each then samples on its own, exactly as it would have alone.

Each case sends its requests together (one prefill) and then each alone (a prefill of its
own): the model's forward must have computed each distinct (adapter, prompt) once, and every
request's tokens and logprobs must be those of its lone run.
"""

from __future__ import annotations

import asyncio

import pytest

from loradock.serving.engines.base import GenerationRequest, SamplingParams
from tests.helpers.prefill import (
    ECHO,
    GREEDY,
    PROMPTS,
    SEEDED,
    answer,
    choices,
    requests_for,
    run,
    same,
    together,
)
from tests.helpers.serving import settled

# (id, requests sent together, distinct (adapter, prompt) pairs: the rows a prefill computes)
CASES = [
    ("n=1", choices("A", True, 1, **GREEDY), 1),
    ("n=2", choices("A", True, 2, **GREEDY), 1),
    ("n=4", choices("A", True, 4, **GREEDY), 1),
    ("n=4-seeded", choices("A", True, 4, **SEEDED), 1),
    ("mixed", [*choices("A", True, 2, **SEEDED), ("A", False, GREEDY),
               *choices("B", True, 2, **GREEDY)], 3),
    ("echo-tops-differ", [("A", True, {**ECHO, "prompt_logprobs": 3}),
                          ("A", True, {**ECHO, "prompt_logprobs": 0}), ("A", True, ECHO)], 1),
]  # fmt: skip


def _prompt_tokens(engine, prompt: str) -> int:
    return len(engine.frontend.encode(GenerationRequest("ids", prompt, SamplingParams())))


@pytest.mark.parametrize(("spec", "rows"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_prefill_row_per_prompt_and_answers_as_alone(
    prefill_engines, prefill_loop, prefill_adapter, prefills, spec, rows
):
    engine = prefill_engines["in-process"]
    requests = requests_for(spec, prefill_adapter)
    sent_together = run(prefill_loop, together(engine, requests))
    shared = list(prefills)
    alone = [run(prefill_loop, answer(engine, r)) for r in requests]
    distinct = {(p, lora) for p, lora, _ in spec}
    assert sum(r for r, _ in shared) == rows == len(distinct)
    assert sum(t for _, t in shared) == sum(_prompt_tokens(engine, PROMPTS[p]) for p, _ in distinct)
    for got, want in zip(sent_together, alone, strict=True):
        assert same(got, want)
    seeded = [
        got["ids"] for got, (_, _, s) in zip(sent_together, spec, strict=True) if s.get("seed")
    ]
    assert len(set(map(tuple, seeded))) == len(seeded)  # each choice samples with its own seed
    assert not settled(engine)["running"] and not engine._cache._pins


@pytest.mark.parametrize("kind", ["in-process", "process"])
def test_a_cancelled_sibling_leaves_the_others_as_alone(
    prefill_engines, prefill_loop, prefill_adapter, kind
):
    """Three choices sent together; closing one's stream after its first chunk ends that
    choice only: the others finish with their lone answers, and nothing stays running."""
    engine = prefill_engines[kind]
    requests = requests_for(choices("A", True, 3, **{**SEEDED, "max_tokens": 12}), prefill_adapter)
    alone = [run(prefill_loop, answer(engine, r)) for r in requests]

    async def main():
        streams = [engine.generate(r) for r in requests]
        firsts = await asyncio.gather(*(anext(s) for s in streams))
        await streams[0].aclose()
        rest = [[c async for c in s] for s in streams[1:]]
        return [[first, *more] for first, more in zip(firsts[1:], rest, strict=True)]

    for chunks, want in zip(run(prefill_loop, main()), alone[1:], strict=True):
        assert [i for c in chunks for i in c.token_ids] == want["ids"]
    stats = settled(engine)
    assert stats["running"] == 0 and stats["queue_depth"] == 0


@pytest.mark.parametrize(
    ("arrivals", "groups"),
    [
        ([(0, "ab")], [["ab"]]),
        ([(1, "ab"), (1, "ab"), (1, "ab")], [["ab", "ab", "ab"]]),
        ([(1, "ab"), (0, "ab"), (1, "ab")], [["ab", "ab", "ab"]]),  # two rows, one group
        # the long prompt's copies join its group whatever their arrival order
        ([(0, "x" * 200), (0, "ab"), (0, "x" * 200)], [["ab"], ["x" * 200, "x" * 200]]),
    ],
)
def test_copies_of_a_prompt_join_their_owners_prefill_group(arrivals, groups):
    from types import SimpleNamespace

    from loradock.serving.engines.peft.prefill import shared_prefill_groups

    seqs = [SimpleNamespace(slot=slot, prompt_ids=list(map(ord, text))) for slot, text in arrivals]
    got = shared_prefill_groups(seqs)
    assert [["".join(map(chr, s.prompt_ids)) for s in g] for g in got] == groups
