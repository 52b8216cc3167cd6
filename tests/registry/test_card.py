"""AdapterCard: exact round trips, Hub-shaped YAML, tolerant reading, strict writing."""

from __future__ import annotations

import logging
import math

import pytest
import yaml
from huggingface_hub import ModelCard

from loradock.errors import CardError
from loradock.registry.card import (
    AdapterCard,
    EvalMetric,
    build_adapter_card,
    build_base_card,
)


def _front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def card() -> AdapterCard:
    return build_adapter_card(
        base_model="acme/tiny-base",
        base_revision="a" * 40,
        task="dates",
        datasets=["acme/dates"],
        tags=["custom"],
        eval_results=[
            EvalMetric("dates", "acme/dates", "exact_match", 0.75, stderr=0.02),
            EvalMetric("dates", "acme/dates", "f1", 1, dataset_revision="b" * 40),
        ],
        training={"hyperparameters": {"r": 4, "lr": 2e-4}, "data_sha256": "c" * 64, "seed": 7},
        extra={"language": ["en"], "custom_key": {"kept": True}},
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_adapter_card(base_model="acme/b"),
        lambda: build_adapter_card(base_model="acme/b", relation="merge", task="json"),
        lambda: build_base_card(),
        lambda: build_base_card(base_model="HuggingFaceTB/SmolLM2-135M", relation="quantized"),
        lambda: AdapterCard(base_model="acme/b", body="no newline at the end"),
    ],
    ids=["adapter", "merge", "base", "quantized-base", "custom-body"],
)
def test_round_trip_is_exact(make):
    c = make()
    assert AdapterCard.from_text(c.to_text()) == c


def test_round_trip_with_everything(card):
    again = AdapterCard.from_text(card.to_text())
    assert again == card
    assert again.eval_results[0].stderr == 0.02
    assert again.eval_results[1].dataset_revision == "b" * 40
    assert again.training["hyperparameters"]["lr"] == 2e-4
    assert again.extra["custom_key"] == {"kept": True}


def test_yaml_is_what_the_hub_expects(card):
    meta = _front_matter(card.to_text())
    assert meta["base_model"] == "acme/tiny-base"
    assert meta["base_model_relation"] == "adapter"
    assert meta["base_model_revision"] == "a" * 40
    assert meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "apache-2.0"
    for tag in ("lora", "peft", "base_model:adapter:acme/tiny-base", "task:dates", "custom"):
        assert tag in meta["tags"]
    (entry,) = meta["model-index"]
    assert entry["name"]  # the Hub requires a model name with model-index
    assert {r["dataset"]["type"] for r in entry["results"]} == {"acme/dates"}
    values = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    assert values == {"exact_match": 0.75, "f1": 1.0}
    # huggingface_hub reads it back as eval results
    parsed = ModelCard(card.to_text()).data
    assert {r.metric_type for r in parsed.eval_results} == {"exact_match", "f1"}


def test_card_kinds_and_tags():
    assert build_adapter_card(base_model="a/b").kind == "adapter"
    merge = build_adapter_card(base_model="a/b", relation="merge")
    assert merge.kind == "merge" and "base_model:merge:a/b" in merge.tags
    assert "lora" not in merge.tags
    assert build_base_card().kind == "base"
    assert build_base_card().tags == ()


def test_with_eval_results_replaces_same_task_and_metric(card):
    updated = card.with_eval_results(
        [EvalMetric("dates", "acme/dates", "exact_match", 0.9), EvalMetric("json", "d", "f1", 0.5)]
    )
    assert updated.metrics == {"dates/exact_match": 0.9, "dates/f1": 1.0, "json/f1": 0.5}
    assert card.metrics["dates/exact_match"] == 0.75  # the original is unchanged
    assert AdapterCard.from_text(updated.to_text()) == updated


def test_tolerant_parse_of_a_foreign_card(caplog):
    text = (
        "---\nbase_model: org/base\nlibrary_name: peft\nthumbnail: pic.png\n"
        "tags:\n- task:summaries\n---\n# Someone else's card\n"
    )
    with caplog.at_level(logging.WARNING):
        c = AdapterCard.from_text(text)
    assert c.kind == "adapter" and c.task == "summaries"
    assert c.extra == {"thumbnail": "pic.png"}
    warned = caplog.text
    assert "base_model_relation" in warned and "license" in warned
    assert _front_matter(c.to_text())["thumbnail"] == "pic.png"  # unknown keys written back


def test_card_without_front_matter_is_a_body():
    c = AdapterCard.from_text("# just markdown\n")
    assert c.body == "# just markdown\n" and c.base_model is None


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("---\nbase_model: [unclosed\n---\nbody", "[unclosed"),
        ("---\n- a\n- list\n---\nbody", "dict"),
        ("---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\n", "model_index"),
    ],
    ids=["bad-yaml", "not-a-mapping", "bad-model-index"],
)
def test_malformed_cards_raise_card_error(text, quoted):
    with pytest.raises(CardError, match="Malformed") as info:
        AdapterCard.from_text(text)
    assert quoted in str(info.value)


@pytest.mark.parametrize(
    ("make", "quoted"),
    [
        (lambda: AdapterCard(base_model=None), "base_model is required"),
        (lambda: AdapterCard(base_model="/home/me/model"), "'/home/me/model'"),
        (lambda: AdapterCard(base_model="a/b", base_model_relation="fork"), "'fork'"),
        (
            lambda: AdapterCard(
                base_model="a/b", eval_results=(EvalMetric("t", "d", "acc", math.nan),)
            ),
            "nan",
        ),
        (
            lambda: AdapterCard(
                base_model="a/b", eval_results=(EvalMetric("t", "d", "acc", 1, stderr=math.inf),)
            ),
            "inf",
        ),
        (
            lambda: AdapterCard(base_model="a/b", eval_results=(EvalMetric("", "d", "acc", 1),)),
            "''",
        ),
        (lambda: AdapterCard(base_model="a/b", training={"x": object()}), "training"),
    ],
    ids=["no-base", "path-base", "bad-relation", "nan", "inf-stderr", "empty-task", "unyamlable"],
)
def test_writing_is_strict(make, quoted):
    c = make()
    with pytest.raises(CardError) as info:
        c.to_text()
    assert quoted in str(info.value)


def test_every_problem_reported_at_once():
    c = AdapterCard(base_model=None, task="", eval_results=(EvalMetric("t", "d", "acc", math.nan),))
    with pytest.raises(CardError) as info:
        c.validate()
    message = str(info.value)
    assert "base_model is required" in message and "task=''" in message and "nan" in message


def test_builders_validate_early():
    with pytest.raises(CardError, match="'C:/model'"):
        build_adapter_card(base_model="C:/model")
    with pytest.raises(CardError, match="relation='adapter'"):
        build_base_card(relation="adapter")
    with pytest.raises(CardError, match="'abc'"):
        EvalMetric("t", "d", "acc", "abc")
    with pytest.raises(CardError, match="nan"):
        build_adapter_card(base_model="a/b").with_eval_results([EvalMetric("t", "d", "m", "nan")])


def test_tuples_in_training_survive_a_round_trip():
    c = build_adapter_card(base_model="a/b", training={"target_modules": ("q_proj", "v_proj")})
    assert AdapterCard.from_text(c.to_text()) == c
    assert c.training["target_modules"] == ["q_proj", "v_proj"]


def test_from_repo_folder(tmp_path, card):
    assert AdapterCard.from_repo_folder(tmp_path) is None
    card.save(tmp_path)
    assert AdapterCard.from_repo_folder(tmp_path) == card
