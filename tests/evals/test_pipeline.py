"""The whole path on tiny models, offline: ``loradock eval`` -> lm-eval -> results JSON ->
model-index -> card revision -> registry index, and back; the report with its plots."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tests.helpers.evals import BASE_ID, publish_tiny


@pytest.fixture(scope="module")
def cli_run(module_home, task_data, tiny_base, tiny_adapter_factory):
    """One ``loradock eval ... --publish --report --json`` over the base and both adapters."""
    from loradock.cli import app
    from loradock.registry.api import Registry

    registry = Registry.open()
    published = publish_tiny(registry, tiny_base, tiny_adapter_factory)
    before = {task: registry.resolve(repo).sha for task, repo in published.items()}
    report = module_home / "report"
    args = [
        "eval",
        published["dates"],
        published["extraction"],
        "--data-dir", str(task_data),
        "--limit", "2",
        "--batch-size", "4",
        "--dtype", "float32",
        "--report", str(report),
        "--publish",
        "--json",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORADOCK_HOME", str(module_home / "loradock"))  # the CLI opens this registry
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.exception)
    return json.loads(result.stdout), report, before, registry, published


def test_eval_publish_round_trip(cli_run):
    summary, report, before, registry, published = cli_run
    labels = [t["label"] for t in summary["targets"]]
    assert labels[0] == BASE_ID and len(labels) == 3  # the base is always the reference
    assert set(summary["tasks"]) == {"dates", "extraction", "general_mc", "heldout_ppl"}

    for task, repo in published.items():
        target = next(t for t in summary["targets"] if t["repo_id"] == repo)
        assert target["sha"] == before[task]
        raw = json.loads(
            (report / "raw" / f"{repo.replace('/', '_')}_{before[task][:7]}.json").read_text()
        )
        # A new revision holds the card; the evaluated one is still there (history kept).
        head = registry.resolve(repo)
        assert head.sha != before[task]
        assert registry.resolve(f"{repo}@{before[task]}").sha == before[task]
        assert [p for p in summary["published"] if p["repo_id"] == repo][0]["sha"] == head.sha

        # results JSON -> card model-index: every metric, value and stderr, exactly.
        card_metrics = {m.key: (m.value, m.stderr) for m in head.card.eval_results}
        assert set(card_metrics) == set(target["metrics"])
        for key, (value, stderr) in card_metrics.items():
            task_name, metric = key.split("/")
            assert (
                value
                == target["metrics"][key]["value"]
                == raw["results"][task_name][f"{metric},none"]
            )
            stderr_raw = raw["results"][task_name][f"{metric}_stderr,none"]
            assert stderr == (None if stderr_raw == "N/A" else stderr_raw)
        entry = next(m for m in head.card.eval_results if m.key == "dates/exact_match")
        assert entry.source == "lm-evaluation-harness" and entry.dataset == "loradock/dates"
        assert entry.dataset_revision  # which version of the data was measured
        # What makes results comparable survives the card: version, config hash, n-shot.
        assert (entry.task_version, entry.num_fewshot) == ("1.0", 0)
        assert entry.task_hash == summary["task_hashes"]["dates"]
        assert "model-index" in (head.path / "README.md").read_text()

        # card -> registry index: search ranks by what was measured.
        row = registry.show(repo)
        assert dict(row.metrics) == {k: v for k, (v, _) in card_metrics.items()}
        version = row.metric_versions["dates/exact_match"]  # and what it was measured on
        assert (version.version, version.config_hash, version.num_fewshot) == (
            "1.0", entry.task_hash, 0,
        )  # fmt: skip

    ranked = registry.search(task="dates", sort="heldout_ppl/bits_per_byte", descending=False)
    assert [r.repo_id for r in ranked] == [published["dates"]]
    both = registry.search(sort="heldout_ppl/bits_per_byte", descending=False)
    values = [r.metrics["heldout_ppl/bits_per_byte"] for r in both]
    assert values == sorted(values) and len(values) == 2


def test_report_renders_with_plots_and_raw_json(cli_run):
    summary, report, *_ = cli_run
    html = (report / "report.html").read_text()
    markdown = (report / "report.md").read_text()
    assert "Forgetting check" in markdown and "<table>" in html
    for task in summary["tasks"]:
        plot = report / "plots" / f"{task}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="plots/{task}.png"' in html
    for link in re.findall(r'href="(raw/[^"]+\.json)"', html):
        raw = json.loads((report / link).read_text())
        assert {"results", "configs", "versions", "n-samples"} <= set(raw)
        assert raw["loradock"]["task_hashes"] == summary["task_hashes"]
        assert raw["loradock"]["versions"]["lm_eval"] == raw["lm_eval_version"]
    assert len(re.findall(r'href="raw/', html)) == 3
    assert len(summary["forgetting"]) == 2 * 3  # 2 adapters x (acc, acc_norm, bits_per_byte)


def test_registry_search_ranks_by_measured_metric(cli_run, module_home):
    """``loradock registry search --sort METRIC`` orders adapters by what the eval wrote."""
    from loradock.cli import app

    summary, *_ = cli_run
    measured = {
        t["repo_id"]: t["metrics"]["heldout_ppl/bits_per_byte"]["value"]
        for t in summary["targets"]
        if t["kind"] == "adapter"
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORADOCK_HOME", str(module_home / "loradock"))
        args = ["registry", "search", "--sort", "heldout_ppl/bits_per_byte", "--json"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stdout
    rows = [r for r in json.loads(result.stdout) if r["repo_id"] in measured]
    assert [r["repo_id"] for r in rows] == sorted(measured, key=measured.get, reverse=True)
    for row in rows:
        assert row["metrics"]["heldout_ppl/bits_per_byte"] == measured[row["repo_id"]]
        version = row["metric_versions"]["heldout_ppl/bits_per_byte"]  # what the Space reads
        assert version["config_hash"] == summary["task_hashes"]["heldout_ppl"]
