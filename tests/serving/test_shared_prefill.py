"""A request's ``n`` choices share one prefill on the PEFT engine: sequences sent together with
the same prompt through the same adapter are computed as one row of the prefill forward, and
each then samples on its own, exactly as it would have alone.

Each case sends its requests together (one prefill) and then each alone (a prefill of its
own): the model's forward must have computed each distinct (adapter, prompt) once, and every
request's tokens and logprobs must be those of its lone run.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from loradock.serving.config import PeftEngineConfig
from loradock.serving.engines.base import GenerationRequest, SamplingParams
from loradock.serving.engines.peft.engine import PeftEngine
from loradock.serving.engines.peft.process import ProcessEngine
from tests.helpers.event_loop import background_loop, run_on
from tests.helpers.serving import BASE_ID

PROMPTS = {"A": "Convert the date 3 March 2024 to ISO format:", "B": "Count to five:"}
GREEDY = {"temperature": 0, "max_tokens": 6}


@pytest.fixture(scope="module")
def loop():
    with background_loop() as loop:
        yield loop


def _run(loop, coro, timeout: float = 120):
    return run_on(loop, coro, timeout)


@pytest.fixture(scope="module")
def engines(published, loop):
    # A long gathering wait: requests sent together always land in one prefill, however
    # loaded the machine.
    options = PeftEngineConfig(
        dtype="float32", max_loaded=2, max_batch_size=16, torch_threads=1, max_wait_ms=100
    )
    built = {
        "in-process": PeftEngine(published.base.path, options, base_name=BASE_ID),
        "process": ProcessEngine(published.base.path, options, base_name=BASE_ID),
    }
    for engine in built.values():
        _run(loop, engine.start(), timeout=300)
    yield built
    for engine in built.values():
        _run(loop, engine.shutdown())


@pytest.fixture(scope="module")
def adapter(published):
    from loradock.serving.engines.base import AdapterSpec

    resolved = published.registry.resolve(published.adapters[1])
    return AdapterSpec("good", resolved.repo_id, resolved.sha, resolved.path, rank=4)


@pytest.fixture
def prefills(engines):
    """(rows, prompt tokens) of every prefill forward the in-process engine's model runs."""
    seen: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1:  # a decode step feeds one token a row
            # the tokens this forward computes (after a shared prefix, the mask covers its
            # cached columns too)
            computed = kwargs["attention_mask"][:, -ids.shape[1] :]
            seen.append((ids.shape[0], int(computed.sum())))

    hook = engines["in-process"].model.register_forward_pre_hook(record, with_kwargs=True)
    yield seen
    hook.remove()


def _requests(spec: list[tuple[str, bool, dict]], adapter) -> list[GenerationRequest]:
    return [
        GenerationRequest(f"r{i}", PROMPTS[p], SamplingParams(**s), adapter if lora else None)
        for i, (p, lora, s) in enumerate(spec)
    ]


def _choices(prompt: str, lora: bool, n: int, **sampling) -> list[tuple[str, bool, dict]]:
    """A request's ``n`` choices as the HTTP layer makes them: choice ``i`` seeds ``seed + i``."""
    seed = sampling.pop("seed", None)
    return [
        (prompt, lora, {**sampling, "seed": None if seed is None else seed + i}) for i in range(n)
    ]


async def _answer(engine, request: GenerationRequest) -> dict:
    out = {"ids": [], "logprobs": [], "prompt": None}
    async for chunk in engine.generate(request):
        out["ids"] += chunk.token_ids
        out["logprobs"] += [(e.token_id, e.logprob, e.top) for e in chunk.logprobs or ()]
        if chunk.prompt_logprobs is not None:
            out["prompt"] = [e and (e.token_id, e.logprob, e.top) for e in chunk.prompt_logprobs]
    return out


async def _together(engine, requests: list[GenerationRequest]) -> list[dict]:
    return await asyncio.gather(*(_answer(engine, r) for r in requests))


def _same(together: dict, alone: dict) -> bool:
    """The same tokens, and logprobs equal to float rounding (the batches differ)."""

    def flat(entries):
        return [
            x for e in entries or () if e for x in (e[0], e[1], *(v for pair in e[2] for v in pair))
        ]

    return together["ids"] == alone["ids"] and all(
        flat(together[k]) == pytest.approx(flat(alone[k]), abs=1e-4) and
        (together[k] is None) == (alone[k] is None)
        for k in ("logprobs", "prompt")
    )  # fmt: skip


def _settled(engine) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats.get("running") == 0 and stats.get("queue_depth") == 0:
            return stats
        time.sleep(0.05)
    return engine.stats()


SEEDED = {"temperature": 1.0, "max_tokens": 6, "seed": 7}
ECHO = {**GREEDY, "logprobs": 2}
# (id, requests sent together, distinct (adapter, prompt) pairs: the rows a prefill computes)
CASES = [
    ("n=1", _choices("A", True, 1, **GREEDY), 1),
    ("n=2", _choices("A", True, 2, **GREEDY), 1),
    ("n=4", _choices("A", True, 4, **GREEDY), 1),
    ("n=4-seeded", _choices("A", True, 4, **SEEDED), 1),
    ("mixed", [*_choices("A", True, 2, **SEEDED), ("A", False, GREEDY),
               *_choices("B", True, 2, **GREEDY)], 3),
    ("echo-tops-differ", [("A", True, {**ECHO, "prompt_logprobs": 3}),
                          ("A", True, {**ECHO, "prompt_logprobs": 0}), ("A", True, ECHO)], 1),
]  # fmt: skip


def _prompt_tokens(engine, prompt: str) -> int:
    return len(engine.frontend.encode(GenerationRequest("ids", prompt, SamplingParams())))


@pytest.mark.parametrize(("spec", "rows"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_prefill_row_per_prompt_and_answers_as_alone(
    engines, loop, adapter, prefills, spec, rows
):
    engine = engines["in-process"]
    requests = _requests(spec, adapter)
    together = _run(loop, _together(engine, requests))
    shared = list(prefills)
    alone = [_run(loop, _answer(engine, r)) for r in requests]
    distinct = {(p, lora) for p, lora, _ in spec}
    assert sum(r for r, _ in shared) == rows == len(distinct)
    assert sum(t for _, t in shared) == sum(_prompt_tokens(engine, PROMPTS[p]) for p, _ in distinct)
    for got, want in zip(together, alone, strict=True):
        assert _same(got, want)
    seeded = [got["ids"] for got, (_, _, s) in zip(together, spec, strict=True) if s.get("seed")]
    assert len(set(map(tuple, seeded))) == len(seeded)  # each choice samples with its own seed
    assert not _settled(engine)["running"] and not engine._cache._pins


@pytest.mark.parametrize("kind", ["in-process", "process"])
def test_a_cancelled_sibling_leaves_the_others_as_alone(engines, loop, adapter, kind):
    """Three choices sent together; closing one's stream after its first chunk ends that
    choice only: the others finish with their lone answers, and nothing stays running."""
    engine = engines[kind]
    requests = _requests(_choices("A", True, 3, **{**SEEDED, "max_tokens": 12}), adapter)
    alone = [_run(loop, _answer(engine, r)) for r in requests]

    async def main():
        streams = [engine.generate(r) for r in requests]
        firsts = await asyncio.gather(*(anext(s) for s in streams))
        await streams[0].aclose()
        rest = [[c async for c in s] for s in streams[1:]]
        return [[first, *more] for first, more in zip(firsts[1:], rest, strict=True)]

    for chunks, want in zip(_run(loop, main()), alone[1:], strict=True):
        assert [i for c in chunks for i in c.token_ids] == want["ids"]
    stats = _settled(engine)
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
    ("with-n=2", [*_choices("D0", True, 2, **SEEDED), ("D1", True, GREEDY),
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
    engines, loop, adapter, prefills, spec, groups
):
    engine = engines["in-process"]
    requests = _requests(spec, adapter)
    distinct = {p: _ids(engine, p) for p, _, _ in spec}
    whole = sum(map(len, distinct.values()))
    saved = sum((len(g) - 1) * _common([distinct[p] for p in g]) for g in groups)
    alone = [_run(loop, _answer(engine, r)) for r in requests]
    prefills.clear()
    before = engine.stats()
    together = _run(loop, _together(engine, requests))
    assert sum(t for _, t in prefills) == whole - saved
    counted = {
        k: engine.stats()[f"batch_prompt_tokens_{k}"] - before[f"batch_prompt_tokens_{k}"]
        for k in ("computed", "reused")
    }  # /metrics' loradock_prefill_tokens: each request's prompt, computed or reused
    sent = sum(len(distinct[p]) for p, _, _ in spec)
    assert counted == {"computed": whole - saved, "reused": sent - whole + saved}
    engine._scheduler.runner.share_prefixes = False
    try:
        prefills.clear()
        unshared = _run(loop, _together(engine, requests))
        assert sum(t for _, t in prefills) == whole
    finally:
        engine._scheduler.runner.share_prefixes = True
    for got, plain, want in zip(together, unshared, alone, strict=True):
        assert _same(got, want) and _same(plain, want)
    assert not _settled(engine)["running"] and not engine._cache._pins


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

    rows = [SimpleNamespace(slot=slot, prompt_ids=list(map(ord, t))) for slot, t in prompts]
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
