"""Prompts that begin alike through one adapter compute their common beginning once on the
PEFT engine (``prefix.py``), and a later prompt starts from a kept prefix: the prompt tokens
each prefill computes drop by what the prefixes hold, and every answer is its lone run's.
"""

from __future__ import annotations

import contextlib

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

# Prompts that begin alike: a task's instructions, then each row's input.
TASK = (
    "Rewrite the date below in ISO format (YYYY-MM-DD). Two-digit years mean 20YY; '(US)' "
    "means month first, '(EU)' day first. Reply with the date only.\nDate: "
)
DATES = ["Oct 1 2003", "23/06/1994 (EU)", "March 3, 2024", "1/2/03 (US)"]
PROMPTS.update({f"D{i}": TASK + date for i, date in enumerate(DATES)})
# (id, requests sent together, the groups of prompts that share their common beginning)
PREFIX_CASES = [
    ("four-rows", [(f"D{i}", True, GREEDY) for i in range(4)], [["D0", "D1", "D2", "D3"]]),
    ("two-slots", [("D0", True, GREEDY), ("D1", True, GREEDY), ("D2", False, GREEDY),
                   ("D3", False, GREEDY)], [["D0", "D1"], ["D2", "D3"]]),
    ("an-outlier", [("D0", True, GREEDY), ("D1", True, GREEDY), ("D2", True, GREEDY),
                    ("B", True, GREEDY)], [["D0", "D1", "D2"]]),
    ("echo", [(f"D{i}", True, {**ECHO, "prompt_logprobs": 2}) for i in range(4)],
     [["D0", "D1", "D2", "D3"]]),
    ("with-n=2", [*choices("D0", True, 2, **SEEDED), ("D1", True, GREEDY),
                  ("D2", True, GREEDY)], [["D0", "D1", "D2"]]),
]  # fmt: skip


def _ids(engine, prompt: str) -> list[int]:
    return engine.frontend.encode(GenerationRequest("ids", PROMPTS[prompt], SamplingParams()))


def _common(rows: list[list[int]]) -> int:
    """Leading tokens all of ``rows`` share, each keeping its last token to compute."""
    n = 0
    while all(len(r) > n + 1 and r[n] == rows[0][n] for r in rows):
        n += 1
    return n


@pytest.mark.parametrize(
    ("spec", "groups"), [c[1:] for c in PREFIX_CASES], ids=[c[0] for c in PREFIX_CASES]
)
def test_prompts_that_begin_alike_compute_their_beginning_once(
    prefill_engines, prefill_loop, prefill_adapter, prefills, spec, groups
):
    engine = prefill_engines["in-process"]
    runner = engine._scheduler.runner
    requests = requests_for(spec, prefill_adapter)
    distinct = {p: _ids(engine, p) for p, _, _ in spec}
    whole = sum(map(len, distinct.values()))
    saved = sum((len(g) - 1) * _common([distinct[p] for p in g]) for g in groups)
    with _sharing(runner, False):
        alone = [run(prefill_loop, answer(engine, r)) for r in requests]
        prefills.clear()
        unshared = run(prefill_loop, together(engine, requests))
        assert sum(t for _, t in prefills) == whole
    runner.prefix_cache.clear()
    prefills.clear()
    before = engine.stats()
    sent_together = run(prefill_loop, together(engine, requests))
    assert sum(t for _, t in prefills) == whole - saved
    counted = {
        k: engine.stats()[f"batch_prompt_tokens_{k}"] - before[f"batch_prompt_tokens_{k}"]
        for k in ("computed", "reused")
    }  # /metrics' loradock_prefill_tokens: each request's prompt, computed or reused
    sent = sum(len(distinct[p]) for p, _, _ in spec)
    assert counted == {"computed": whole - saved, "reused": sent - whole + saved}
    for got, plain, want in zip(sent_together, unshared, alone, strict=True):
        assert same(got, want) and same(plain, want)
    assert not settled(engine)["running"] and not engine._cache._pins


@contextlib.contextmanager
def _sharing(runner, on: bool):
    runner.share_prefixes = on
    try:
        yield
    finally:
        runner.share_prefixes = True


# (id, the prompts sent together first (they fill the prefix cache), then one request alone:
#  whether it starts from the kept prefix)
KEPT_CASES = [
    ("same-adapter", ("D4", True, GREEDY), True),
    ("other-adapter", ("D4", False, GREEDY), False),
    ("echo-computes-its-own", ("D4", True, {**ECHO, "prompt_logprobs": 1}), False),
    ("another-beginning", ("A", True, GREEDY), False),
]
PROMPTS["D4"] = TASK + "12.11.2020 (EU)"


@pytest.mark.parametrize(
    ("late", "hit"), [c[1:] for c in KEPT_CASES], ids=[c[0] for c in KEPT_CASES]
)
def test_a_later_prompt_starts_from_a_kept_prefix(
    prefill_engines, prefill_loop, prefill_adapter, prefills, late, hit
):
    engine = prefill_engines["in-process"]
    runner = engine._scheduler.runner
    first = requests_for([(f"D{i}", True, GREEDY) for i in range(3)], prefill_adapter)
    (request,) = requests_for([late], prefill_adapter)
    with _sharing(runner, False):
        want = run(prefill_loop, answer(engine, request))
    runner.prefix_cache.clear()
    run(prefill_loop, together(engine, first))
    assert len(runner.prefix_cache) == 1
    prefills.clear()
    got = run(prefill_loop, answer(engine, request))
    ids = _ids(engine, late[0])
    shared = _common([ids, _ids(engine, "D0"), _ids(engine, "D1"), _ids(engine, "D2")])
    assert sum(t for _, t in prefills) == (len(ids) - shared if hit else len(ids))
    assert same(got, want)


@pytest.mark.parametrize(
    ("prompts", "shared"),
    [
        ([(0, "x" * 40 + "a"), (0, "x" * 40 + "b")], []),  # saves 40 tokens: not a call's worth
        ([(0, "x" * 40 + c) for c in "abc"], [(40, [0, 1, 2])]),
        ([(0, "x" * 40 + c) for c in "ab"] + [(1, "x" * 40 + "c")], []),  # slots apart
        ([(0, "x" * 10 + c) for c in "abcdefghij"], []),  # shorter than MIN_PREFIX_TOKENS
        ([(0, "x" * 40), (0, "x" * 40 + "a"), (0, "x" * 40 + "b")], [(39, [0, 1, 2])]),
        (
            [(0, "y" * 50 + c) for c in "ab"] + [(0, "x" * 50 + c) for c in "abc"],
            [(50, [2, 3, 4])],
        ),  # fmt: skip
    ],
)
def test_prefix_plan(prompts, shared):
    from types import SimpleNamespace

    from loradock.serving.engines.peft.prefix import plan_prefixes

    rows = [
        SimpleNamespace(slot=slot, prompt_ids=list(map(ord, t)), adapter=None)
        for slot, t in prompts
    ]
    plan = plan_prefixes(rows)
    if not shared:
        assert plan is None
        return
    got = [
        (len(prefix), [i for i, k in enumerate(plan.of_row) if k == n])
        for n, prefix in enumerate(plan.prefixes)
    ]
    assert got == shared
    for i, k in enumerate(plan.of_row):
        if k >= 0:
            assert rows[i].prompt_ids[: plan.length[i]] == plan.prefixes[k]


def _kv(tokens: int, nbytes_per_token: int = 8) -> list[tuple]:
    import torch

    size = tokens * nbytes_per_token // 8  # two float32 tensors a layer
    return [(torch.zeros(size), torch.zeros(size))]


@pytest.mark.parametrize(
    ("puts", "bounds", "kept"),
    [
        ([("a", 20), ("a", 30)], {}, [("a", 20), ("a", 30)]),
        ([("a", 20), ("b", 20)], {}, [("a", 20), ("b", 20)]),  # one beginning, two adapters
        ([("a", 20), ("a", 21), ("a", 22)], {"max_entries": 2}, [("a", 21), ("a", 22)]),
        ([("a", 20), ("a", 21)], {"max_bytes": 300}, [("a", 21)]),  # 160 bytes + 168
        ([("a", 40)], {"max_bytes": 300}, []),  # larger than the whole cache: not kept
    ],
)
def test_prefix_cache_bounds(puts, bounds, kept):
    from loradock.serving.engines.peft.prefix import PrefixCache

    cache = PrefixCache(**bounds)
    for key, n in puts:
        cache.put(key, list(range(n)), _kv(n))
    assert sorted((k, len(t)) for k, t in cache._entries) == kept
    assert cache.nbytes == sum(8 * n for _, n in kept) and len(cache) == len(kept)


@pytest.mark.parametrize(
    ("prompt", "key", "found"),
    [
        (list(range(40)), "a", 30),  # the longest kept beginning
        (list(range(30)), "a", 20),  # one token must stay to compute: not the 30-token one
        (list(range(25)), "b", None),  # another adapter's
        ([99, *range(40)], "a", None),  # begins otherwise
    ],
)
def test_prefix_cache_finds_the_longest_beginning(prompt, key, found):
    from loradock.serving.engines.peft.prefix import PrefixCache

    cache = PrefixCache()
    for n in (20, 30):
        cache.put("a", list(range(n)), _kv(n))
    hit = cache.longest(key, prompt)
    assert (hit[0] if hit else None) == found
