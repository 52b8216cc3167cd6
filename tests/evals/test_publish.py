"""Write-back on made-up results over a real tiny registry (no model runs): every measured
model's card gets its results as a new revision, the base's own card too, so the index row
the Space's leaderboard reads for the base carries its metrics; results never land on other
weights than the measured ones."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from loradock.errors import EvalError
from loradock.evals.options import EvalOptions
from loradock.evals.publish import publish_results
from loradock.evals.results import MetricResult, TargetResult
from loradock.evals.run import EvalRun
from loradock.evals.targets import TargetPlan, resolve_targets
from tests.helpers.evals import BASE_ID

HASH = "ab42f00b" * 8
VALUES = {
    BASE_ID: (0.10, 0.60),
    "acme/tiny-dates": (0.80, 0.55),
    "acme/tiny-extraction": (0.2, 0.6),
}


def _made_up_run(registry, published, *, local_base: bool = False) -> EvalRun:
    """The base and both adapters "measured" on dates and general_mc (version 1.0, 0-shot)."""
    plan = resolve_targets(list(published.values()), registry=registry)
    if local_base:  # a base named by a folder: no repo, no card
        plan = TargetPlan(dataclasses.replace(plan.base, repo_id=None, sha=None), plan.adapters)
    results = []
    for target in plan.all:
        dates, acc = VALUES[target.repo_id or BASE_ID]
        on = {"task_version": "1.0", "task_hash": HASH, "num_fewshot": 0}
        metrics = [
            MetricResult(task, metric, value, 0.01, True, f"loradock/{task}", "d", kind, 4, **on)
            for task, metric, value, kind in (
                ("dates", "exact_match", dates, "task"),
                ("general_mc", "acc", acc, "general"),
            )
        ]
        results.append(TargetResult(target, metrics, raw={}))
    return EvalRun(plan, [], results, EvalOptions(), {"dates": HASH, "general_mc": HASH})


def _edit_card(repo_id: str):
    def edit(registry, tiny_base, tiny_adapter_factory) -> None:
        resolve = registry.resolve_base if repo_id == BASE_ID else registry.resolve
        card = resolve(repo_id).card
        registry.update_card(repo_id, dataclasses.replace(card, body="# edited since"))

    return edit


def _new_base_weights(registry, tiny_base, tiny_adapter_factory) -> None:
    folder = tiny_base.parent.parent / "other-base"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(tiny_base, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    registry.publish_base(folder, BASE_ID, card=registry.resolve_base(BASE_ID).card)


def _new_adapter_weights(registry, tiny_base, tiny_adapter_factory) -> None:
    card = registry.resolve("acme/tiny-dates").card
    registry.publish(tiny_adapter_factory(seed=7), "acme/tiny-dates", card=card)


@pytest.mark.parametrize(
    ("since", "local_base", "written"),
    [
        (None, False, {BASE_ID, "acme/tiny-dates", "acme/tiny-extraction"}),
        (_edit_card(BASE_ID), False, {BASE_ID, "acme/tiny-dates", "acme/tiny-extraction"}),
        (
            _edit_card("acme/tiny-dates"),
            False,
            {BASE_ID, "acme/tiny-dates", "acme/tiny-extraction"},
        ),
        (None, True, {"acme/tiny-dates", "acme/tiny-extraction"}),  # a folder has no card
        (_new_base_weights, False, "acme/tiny-base"),  # refused, naming the model
        (_new_adapter_weights, False, "acme/tiny-dates"),
    ],
    ids=[
        "unchanged",
        "base-card-edited",
        "adapter-card-edited",
        "local-base",
        "base-weights-new",
        "adapter-weights-new",
    ],
)
def test_every_measured_models_card_gets_its_results(
    registry, published, tiny_base, tiny_adapter_factory, since, local_base, written
):
    run = _made_up_run(registry, published, local_base=local_base)
    if since is not None:
        since(registry, tiny_base, tiny_adapter_factory)
    heads = {r.repo_id: r.sha for r in registry.search(kind=None)}
    if isinstance(written, str):
        with pytest.raises(EvalError, match=f"{written}.*different weights"):
            publish_results(run, registry=registry)
        assert {r.repo_id: r.sha for r in registry.search(kind=None)} == heads  # nothing written
        return
    out = publish_results(run, registry=registry)
    assert {p.repo_id for p in out} == written
    for pub in out:
        row = registry.show(pub.repo_id)
        assert row.sha == pub.sha != heads[pub.repo_id]  # a new revision on the head
        assert row.kind == pub.kind
        assert (row.metrics["dates/exact_match"], row.metrics["general_mc/acc"]) == (
            VALUES[pub.repo_id]
        )
        assert row.metric_versions["general_mc/acc"].version == "1.0"


def test_the_leaderboards_base_row_shows_the_published_base_results(registry, published):
    """What the Space reads (``GET /v1/registry/adapters``, adapters and ``kind=base``) turns
    into a leaderboard whose base row has its metrics and whose "vs base" columns fill."""
    from loradock.serving.http.registry_routes import _row
    from loradock.spaces.records import AdapterRow
    from loradock.spaces.tables import leaderboard_frame, version_caption

    publish_results(_made_up_run(registry, published), registry=registry)
    served = [_row(r) for r in [*registry.search(kind="base"), *registry.search()]]
    rows = [AdapterRow.from_json(json.loads(json.dumps(r))) for r in served]
    frame = leaderboard_frame(rows, [], task="dates", base_model=BASE_ID).set_index("model")
    assert frame.loc[BASE_ID, "dates/exact_match"] == 0.1
    assert frame.loc["acme/tiny-dates", "dates/exact_match vs base"] == pytest.approx(0.7)
    assert frame.loc["acme/tiny-extraction", "general_mc/acc vs base"] == pytest.approx(0.0)
    caption = version_caption(rows, frame.reset_index()).replace("\\", "")
    assert "`dates` v1.0, 0-shot, config ab42f00b" in caption


@pytest.mark.parametrize(
    ("new_weights", "outcome"),
    [(False, "head"), (True, "different weights")],
    ids=["card-only-revision", "new-weights"],
)
def test_adapters_naming_two_base_revisions(
    registry, published, tiny_base, tiny_adapter_factory, new_weights, outcome
):
    """Adapters trained before and after the base's results were written back name two
    revisions of the same weights: one run takes the base's head; new weights are refused."""
    from loradock.registry.card import build_adapter_card

    first = registry.resolve_base(BASE_ID).sha
    if new_weights:
        _new_base_weights(registry, tiny_base, tiny_adapter_factory)
    else:
        _edit_card(BASE_ID)(registry, tiny_base, tiny_adapter_factory)
    head = registry.resolve_base(BASE_ID).sha
    names = []
    for seed, revision in ((1, first), (2, head)):
        card = build_adapter_card(base_model=BASE_ID, base_revision=revision, task="dates")
        repo = f"acme/rev-{seed}"
        registry.publish(tiny_adapter_factory(seed=seed), repo, card=card)
        names.append(repo)
    if outcome == "head":
        assert resolve_targets(names, registry=registry).base.sha == head
    else:
        with pytest.raises(EvalError, match=outcome):
            resolve_targets(names, registry=registry)
