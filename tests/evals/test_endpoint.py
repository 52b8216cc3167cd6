"""Evaluating through a running loradock server (lm-eval's local-chat-completions over HTTP)
gives the same greedy answers and scores as evaluating in-process."""

from __future__ import annotations

import pytest

from loradock.errors import EvalError
from tests.helpers.evals import BASE_ID, publish_tiny

API_KEY = "sk-eval-test-0123456789"
TASKS = ["dates", "extraction"]


@pytest.fixture(scope="module")
def served(module_home, tiny_base, tiny_adapter_factory):
    """The real loradock server (PEFT engine) on 127.0.0.1, serving the base and any adapter."""
    pytest.importorskip("fastapi", reason="the server needs loradock[serve]")
    from loradock.registry.api import Registry
    from loradock.serving.config import ServerConfig
    from loradock.serving.http.app import create_app
    from loradock.serving.http.background import BackgroundServer
    from loradock.serving.server import build_engine

    registry = Registry.open()
    published = publish_tiny(registry, tiny_base, tiny_adapter_factory)
    base = registry.resolve_base(BASE_ID)
    config = ServerConfig.from_options(
        base=BASE_ID, dtype="float32", api_key=API_KEY, port=0, max_model_len=512
    )
    app = create_app(build_engine(config, base.path), registry=registry, config=config, base=base)
    server = BackgroundServer(app)
    server.start()
    try:
        yield server.url, registry, published
    finally:
        server.stop()


def _answers(run):
    """Per target and task: the generated answers by doc id."""
    return {
        (r.target.label, task): {s["doc_id"]: s["filtered_resps"][0] for s in rows}
        for r in run.results
        for task, rows in r.samples.items()
    }


def test_endpoint_and_in_process_agree(served, task_data):
    from loradock.evals.run import evaluate

    url, registry, published = served
    targets = [published["dates"], published["extraction"]]
    common = dict(
        tasks=TASKS,
        limit=3,
        registry=registry,
        data_dir=task_data,
        bootstrap_iters=0,
        log_samples=True,
    )
    remote = evaluate(targets, endpoint=url, api_key=API_KEY, **common)
    local = evaluate(targets, backend="hf", dtype="float32", batch_size=1, **common)

    assert remote.options.backend == "endpoint" and local.options.backend == "hf"
    answers = _answers(local)
    assert answers == _answers(remote)
    assert len(answers) == 3 * len(TASKS)
    # The adapters change what is generated: the comparison is not of empty strings.
    texts = {label: tuple(v.values()) for (label, task), v in answers.items() if task == "dates"}
    assert len(set(texts.values())) > 1 and any(any(t) for t in texts.values())
    for r_local, r_remote in zip(local.results, remote.results, strict=True):
        assert r_local.target.label == r_remote.target.label
        assert {m.key: m.value for m in r_local.metrics} == {
            m.key: m.value for m in r_remote.metrics
        }


def _batch_counters(url: str) -> tuple[float, float]:
    """The server's forward passes and the sequence-steps they ran (``/metrics``)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("loradock_batch_steps_total", "loradock_batch_rows_total"))
    }
    return values["loradock_batch_steps_total"], values["loradock_batch_rows_total"]


@pytest.mark.parametrize(("batch_size", "batched"), [(1, False), (4, True)])
def test_endpoint_batch_size_is_requests_in_flight(served, task_data, batch_size, batched):
    """``--batch-size`` requests go out at once and the engine runs them in one batch; with 1,
    every forward pass runs one sequence."""
    from loradock.evals.run import evaluate

    url, registry, published = served
    steps, rows = _batch_counters(url)
    evaluate(
        [published["dates"]],
        endpoint=url,
        api_key=API_KEY,
        tasks=["dates"],
        limit=4,
        registry=registry,
        data_dir=task_data,
        bootstrap_iters=0,
        batch_size=batch_size,
    )
    after_steps, after_rows = _batch_counters(url)
    ran_steps, ran_rows = after_steps - steps, after_rows - rows
    assert ran_steps > 0
    assert (ran_rows > ran_steps) is batched


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        (dict(tasks=["dates"], api_key="wrong-key"), "401"),
        (dict(tasks=["general_mc"], api_key="wrong-key"), "401"),
    ],
    ids=["bad-key", "bad-key-scoring"],
)
def test_endpoint_refusals_are_clear(served, task_data, kwargs, quoted):
    from loradock.evals.run import evaluate

    url, registry, published = served
    kwargs.setdefault("api_key", API_KEY)
    with pytest.raises(EvalError) as info:
        evaluate(
            [published["dates"]],
            endpoint=url,
            limit=1,
            registry=registry,
            data_dir=task_data,
            **kwargs,
        )
    assert quoted in str(info.value)


def _loglikelihoods(result) -> dict[tuple[str, int, int], float]:
    """Per task, doc id and choice: the choice's log-likelihood as scored."""
    return {
        (task, s["doc_id"], i): float(resp[0])
        for task, rows in result.samples.items()
        for s in rows
        for i, resp in enumerate(s["filtered_resps"])
    }


@pytest.mark.parametrize(
    ("task", "metric", "adapters"),
    [("general_mc", "acc", ["dates"]), ("heldout_ppl", None, [])],
    ids=["general_mc-base-and-adapter", "heldout_ppl-base"],
)
def test_endpoint_scores_loglikelihood_tasks_as_in_process(
    served, task_data, task, metric, adapters
):
    """Multiple-choice and perplexity through the server's echo + logprobs (lm-eval's
    local-completions): the base's and each adapter's scores (the adapter served by name)
    agree with the in-process hf backend's within their stderr."""
    from loradock.evals.run import evaluate

    url, registry, published = served
    targets = [BASE_ID, *(published[a] for a in adapters)]
    common = dict(
        tasks=[task], limit=16, registry=registry, data_dir=task_data, log_samples=bool(adapters)
    )
    remote = evaluate(targets, endpoint=url, api_key=API_KEY, **common)
    local = evaluate(targets, backend="hf", dtype="float32", batch_size=1, **common)
    for r_remote, r_local in zip(remote.results, local.results, strict=True):
        assert r_remote.target.label == r_local.target.label
        got = {m.metric: m for m in r_remote.metrics}
        want = {m.metric: m for m in r_local.metrics}
        assert got.keys() == want.keys() and got
        for name, m in want.items():
            tolerance = max(m.stderr or 0, 1e-3 * abs(m.value))
            assert got[name].value == pytest.approx(m.value, abs=tolerance), (name, got[name], m)
        if metric is not None:
            assert got[metric].stderr is not None and got[metric].n_samples == 16
    if adapters:
        # The adapter was really applied through the endpoint: its choices' log-likelihoods
        # are the hf backend's for the adapter, and not the base's.
        base, *tuned = (_loglikelihoods(r) for r in remote.results)
        for got, want in zip(tuned, map(_loglikelihoods, local.results[1:]), strict=True):
            assert got.keys() == want.keys() == base.keys() and got
            assert got == pytest.approx(want, abs=1e-3)
            assert got != pytest.approx(base, abs=1e-3)


def test_pairwise_judge_with_a_loradock_server_as_judge(served, task_data, tmp_path):
    """Off by default; on, base (A) vs each adapter (B), judged in both orders by the server."""
    from loradock.evals.run import evaluate

    url, registry, published = served
    run = evaluate(
        [published["dates"]],
        endpoint=url,
        api_key=API_KEY,
        tasks=["dates"],
        limit=1,
        registry=registry,
        data_dir=task_data,
        judge_endpoint=url,
        judge_model=BASE_ID,
        judge_api_key=API_KEY,
        judge_limit=2,
        judge_max_tokens=8,  # the tiny tokenizer spends a token per byte or two
        report_dir=tmp_path / "r",
    )
    [judged] = run.judged
    assert judged.model_a == BASE_ID and judged.model_b.startswith(published["dates"] + "@")
    assert len(judged.pairs) == 2 and judged.wins_a + judged.wins_b + judged.ties == 2
    for pair in judged.pairs:
        assert pair.answer_a != pair.answer_b  # the adapter really answered, not the base
        assert set(pair.verdicts) <= {"A", "B", "T"}
    assert "Pairwise judge" in (tmp_path / "r" / "report.md").read_text()
    assert (
        evaluate(
            [published["dates"]],
            endpoint=url,
            api_key=API_KEY,
            tasks=["dates"],
            limit=1,
            registry=registry,
            data_dir=task_data,
        ).judged
        == []
    )  # off by default
