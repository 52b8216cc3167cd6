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

    assert set(first.adapters) == {
        "local/tiny-dates-lora",
        "local/tiny-extraction-lora",
        "local/tiny-dates-qlora",
    }
    assert sorted(first.trained) == sorted(first.adapters)
    # lm-eval report with its raw results, and metrics that reached the index
    assert (home / "report" / "report.html").is_file()
    assert (home / "report" / "report.md").is_file()
    assert {r["repo_id"] for r in first.ranking["dates"]} == {
        "local/tiny-dates-lora",
        "local/tiny-dates-qlora",
    }
    assert all("dates/exact_match" in r for r in first.ranking["dates"])
    # every model answered every prompt through the endpoint
    models = {a["model"] for a in first.answers}
    assert models == {first.base, *first.adapters, *first.prod.values()}
    assert first.prod["dates"].endswith("@prod")
    assert first.space_url and first.api_url
    # the demo stops what it started: its endpoint no longer answers
    with pytest.raises(httpx.HTTPError):
        httpx.get(first.api_url.removesuffix("/v1") + "/health", timeout=2)

    # second run: nothing retrained, same adapter revisions, the report reused
    second = run_demo(DemoConfig(small=True, home=home, keep_running=False, space=False))
    assert second.trained == []
    assert second.adapters == first.adapters
    assert sorted(second.reused) == sorted(["eval", *(f"train:{r}" for r in first.adapters)])
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
