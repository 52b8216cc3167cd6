"""`make demo` in its reduced form (tiny model, a few steps): the lifecycle cannot silently break."""

from __future__ import annotations

import json

import httpx
import pytest

from loradock.demo import DemoConfig, run_demo
from loradock.errors import ConfigError


@pytest.mark.slow
def test_small_demo_runs_every_step_and_reuses_its_work(tmp_path):
    home = tmp_path / "demo-home"
    first = run_demo(DemoConfig(small=True, home=home, keep_running=False))

    combination = "local/tiny-dates-extraction-cat"
    trained = {"local/tiny-dates-lora", "local/tiny-extraction-lora", "local/tiny-dates-qlora"}
    assert set(first.adapters) == {*trained, combination} and first.combined == combination
    assert sorted(first.trained) == sorted(trained)
    # lm-eval report with its raw results, and metrics that reached the index
    assert (home / "report" / "report.html").is_file()
    report = (home / "report" / "report.md").read_text()
    assert "- Backend: `endpoint`" in report  # lm-eval measured through the demo's endpoint
    # the combination evaluated on both tasks, next to each of its two sources
    assert "what each combination kept of its sources" in report
    assert report.count("| `local/tiny-dates-lora` | 1.0 | dates |") >= 1
    assert report.count("| `local/tiny-extraction-lora` | 1.0 | extraction |") >= 1
    assert {r["repo_id"] for r in first.ranking["dates"]} == {
        "local/tiny-dates-lora",
        "local/tiny-dates-qlora",
        combination,
    }
    assert all("dates/exact_match" in r for r in first.ranking["dates"])
    # every model answered every prompt through the endpoint
    models = {a["model"] for a in first.answers}
    assert models == {first.base, *first.adapters, *first.prod.values()}
    assert first.prod["dates"].endswith("@prod")
    assert first.space_url and first.api_url
    # the promoted dates adapter merged (float32, like the tiny base), checked, served alone
    # and asked what the hot-swapped adapter was asked
    merged = first.merged
    assert merged["source"].split("@")[0] == first.prod["dates"].split("@")[0]
    assert merged["check"]["dtype"] == "float32" and merged["check"]["mean_kl"] < 1e-4
    hot = [a for a in first.answers if (a["model"], a["task"]) == (first.prod["dates"], "dates")]
    assert [(a["id"], a["model"]) for a in first.merged_answers] == [
        (a["id"], f"{merged['repo_id']}@{merged['sha']}") for a in hot
    ]
    assert len(first.step_seconds) == 8
    # the demo stops what it started: its endpoint no longer answers
    with pytest.raises(httpx.HTTPError):
        httpx.get(first.api_url.removesuffix("/v1") + "/health", timeout=2)

    # second run: nothing retrained, recombined or remerged, the report reused
    second = run_demo(DemoConfig(small=True, home=home, keep_running=False, space=False))
    assert second.trained == []
    assert second.adapters == first.adapters and second.merged["sha"] == merged["sha"]
    assert sorted(second.reused) == sorted(
        [
            "eval",
            f"combine:{combination}",
            f"merge:{merged['repo_id']}",
            *(f"train:{r}" for r in trained),
        ]
    )
    assert first.reused == []
    json.dumps([a for a in second.answers])  # answers are plain data


@pytest.mark.parametrize(
    "kwargs, quoted",
    [
        ({"api_port": 70000}, "70000"),
        ({"space_port": -1}, "-1"),
        ({"eval_limit": 0}, "0"),
        ({"prompts_per_task": 0}, "0"),
    ],
)
def test_bad_demo_options_are_refused_with_the_value(kwargs, quoted):
    with pytest.raises(ConfigError) as err:
        DemoConfig(**kwargs)
    assert quoted in str(err.value)
