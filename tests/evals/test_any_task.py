"""Any lm-eval task: a task folder (--include-path), a Hub data set from a pre-filled datasets
cache, a standard task offline, and the request cache, on tiny models, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loradock.errors import DataError
from tests.helpers.evals import BASE_ID, publish_tiny
from tests.helpers.hub_datasets import prefill_hub_cache

MC_ROWS = [
    {"q": f"Which number is {n}?", "choices": [str(n), str(n + 1), str(n + 2)], "answer": 0}
    for n in range(4)
]
QA_ROWS = [{"q": f"Say {w}.", "a": w} for w in ("yes", "no", "maybe")]


def _task_yaml(name: str, data: str, output_type: str, path: str = "json") -> str:
    body = {
        "multiple_choice": "doc_to_choice: choices\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n",
        "generate_until": "doc_to_target: '{{a}}'\ngeneration_kwargs:\n  until: ['\\n']\n"
        "  max_gen_toks: 4\nmetric_list:\n  - metric: exact_match\n",
    }[output_type]
    files = f"dataset_kwargs:\n  data_files:\n    test: {data}\n" if data else ""
    return (
        f"task: {name}\ndataset_path: {path}\n{files}test_split: test\nfewshot_split: test\n"
        f"output_type: {output_type}\ndoc_to_text: 'Q: {{{{q}}}}\\nA:'\n{body}"
        "metadata:\n  version: 3.0\n"
    )


@pytest.fixture(scope="module")
def tiny_registry(module_home, tiny_base, tiny_adapter_factory):
    from loradock.registry.api import Registry

    registry = Registry.open()
    return registry, publish_tiny(registry, tiny_base, tiny_adapter_factory)


@pytest.fixture
def task_folder(tmp_path) -> Path:
    """A team's own task folder: data by absolute path, as lm-eval reads it."""
    folder = tmp_path / "my-tasks"
    folder.mkdir()
    for name, rows, kind in (("mc", MC_ROWS, "multiple_choice"), ("qa", QA_ROWS, "generate_until")):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(_task_yaml(f"my_{name}", str(data), kind))
    return folder


def test_include_path_runs_base_and_two_adapters_in_one_report(
    tiny_registry, module_home, task_folder, tmp_path
):
    from loradock.cli import app

    _, published = tiny_registry
    report = tmp_path / "report"
    args = [
        "eval", published["dates"], published["extraction"],
        "--include-path", str(task_folder),
        "--tasks", "my_qa", "--forgetting", "my_mc",
        "--num-fewshot", "1", "--log-samples", "--seed", "3",
        "--dtype", "float32", "--limit", "3", "--report", str(report), "--json",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORADOCK_HOME", str(module_home / "loradock"))
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.exception)
    summary = json.loads(result.stdout)
    assert summary["tasks"] == ["my_qa", "my_mc"]
    assert [t["kind"] for t in summary["targets"]] == ["base", "adapter", "adapter"]
    for target in summary["targets"]:
        metrics = target["metrics"]
        assert set(metrics) == {"my_qa/exact_match", "my_mc/acc"}
        assert {m["version"] for m in metrics.values()} == {"3.0"}
        assert {m["n_shot"] for m in metrics.values()} == {1}  # --num-fewshot passed through
        assert (
            report / "raw" / f"{target['label'].replace('/', '_').replace('@', '_')}.samples.jsonl"
        ).is_file()
    # The forgetting check runs on the named task, judged against the stderr.
    assert {(c["task"], c["metric"]) for c in summary["forgetting"]} == {("my_mc", "acc")}
    assert all("stderr" in c["limit"] for c in summary["forgetting"])
    assert summary["not_comparable"] == {}
    markdown = (report / "report.md").read_text()
    assert "## my\\_qa" in markdown and "version `3.0`, 1-shot" in markdown


@pytest.mark.parametrize("prefilled", [True, False])
def test_hub_data_set_from_a_prefilled_cache(tiny_registry, tmp_path, monkeypatch, prefilled):
    import datasets

    from loradock.evals.hf_backend import InProcessBackend
    from loradock.evals.run import evaluate

    registry, _ = tiny_registry
    cache = tmp_path / "datasets-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    if prefilled:  # a named config, as most Hub benchmarks have (ARC-Easy, ...)
        prefill_hub_cache(cache, "acme/tinymc", {"test": MC_ROWS}, config="easy")
    else:  # the data set is checked before any model loads
        monkeypatch.setattr(InProcessBackend, "_load", _no_model)
    folder = tmp_path / "tasks"
    folder.mkdir()
    task = _task_yaml("tinymc", "", "multiple_choice", "acme/tinymc")
    (folder / "tinymc.yaml").write_text(task + "dataset_name: easy\n")
    kwargs = dict(tasks=["tinymc"], include_paths=[folder], registry=registry, dtype="float32")
    if not prefilled:
        with pytest.raises(DataError) as info:
            evaluate([BASE_ID], **kwargs)
        assert "'acme/tinymc' (config 'easy')" in str(info.value) and str(cache) in str(info.value)
        return
    run = evaluate([BASE_ID], **kwargs)
    acc = run.base.get("tinymc", "acc")
    assert acc.n_samples == len(MC_ROWS) and acc.task_version == "3.0"
    assert acc.dataset == "acme/tinymc"


def _no_model(self):
    raise AssertionError("a model was loaded before the task data was checked")


@pytest.mark.slow  # indexes lm-eval's built-in tasks
def test_standard_task_resolves_and_fails_early_offline(tiny_registry, monkeypatch):
    """``arc_easy`` is lm-eval's; offline, without its data, nothing loads a model."""
    from loradock.evals.hf_backend import InProcessBackend
    from loradock.evals.run import evaluate

    registry, published = tiny_registry
    monkeypatch.setattr(InProcessBackend, "_load", _no_model)
    with pytest.raises(DataError) as info:
        evaluate([published["dates"]], tasks=["arc_easy"], registry=registry)
    message = str(info.value)
    assert "Task 'arc_easy'" in message and "'allenai/ai2_arc' (config 'ARC-Easy')" in message
    assert "HF_DATASETS_CACHE" in message and "HF_HUB_OFFLINE" in message


def test_rerun_after_adding_an_adapter_computes_only_the_new_one(
    tiny_registry, task_data, tmp_path, monkeypatch
):
    from lm_eval.models.huggingface import HFLM

    from loradock.evals.run import evaluate

    registry, published = tiny_registry
    computed: list[int] = []
    for method in ("generate_until", "loglikelihood"):
        original = getattr(HFLM, method)

        def counting(self, requests, *args, _original=original, **kwargs):
            computed.append(len(requests))
            return _original(self, requests, *args, **kwargs)

        monkeypatch.setattr(HFLM, method, counting)
    options = dict(
        tasks=["dates", "general_mc"],
        limit=2,
        data_dir=task_data,
        dtype="float32",
        cache_dir=tmp_path / "cache",
        registry=registry,
    )
    first = evaluate([published["dates"]], **options)
    per_target = sum(computed) // 2  # base and one adapter
    assert per_target == 2 + 2 * 4  # 2 generations, 2 questions x 4 choices
    computed.clear()
    second = evaluate([published["dates"], published["extraction"]], **options)
    assert sum(computed) == per_target  # only the new adapter's requests
    for before, after in zip(first.results, second.results[:2], strict=True):
        assert before.by_key().keys() == after.by_key().keys()
        assert {k: m.value for k, m in before.by_key().items()} == {
            k: m.value for k, m in after.by_key().items()
        }
