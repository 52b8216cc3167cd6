"""The model card: a typed view over a Hub ``README.md`` (YAML front matter + markdown body).

The YAML is read and written through huggingface_hub's ``ModelCardData``/``EvalResult``
(the ``model-index`` half lives in ``eval_results.py``, the tolerant read of the metadata in
``card_fields.py``; the front matter is split with ``RepoCard``'s own regex and parsed by
libyaml), so a card loradock writes is a card the Hub understands (``base_model``,
``base_model_relation``, ``model-index``, tags such as ``base_model:adapter:<id>``).

Parsing is tolerant (a card written by someone else still opens: missing keys get defaults
and a warning naming the key, unknown keys are kept in ``extra`` and written back);
writing is strict (``to_text`` refuses a card the registry could not index). Round trips
are exact: ``AdapterCard.from_text(card.to_text()) == card``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCardData

from loradock.errors import CardError
from loradock.registry.card_fields import (
    BASE_REVISION_KEY,
    TASK_TAG_PREFIX,
    TRAINING_KEY,
    fields_from_card_data,
)
from loradock.registry.card_yaml import check_card_size, split_front_matter
from loradock.registry.eval_results import EvalMetric, metric_problems, to_eval_result
from loradock.registry.local_paths import strip_local_paths
from loradock.registry.names import REPO_ID_RE

CARD_FILENAME = "README.md"
# The Hub's base_model_relation values; "adapter" and "merge" are the ones loradock writes.
RELATIONS = ("adapter", "merge", "finetune", "quantized")


@dataclass(frozen=True)
class AdapterCard:
    """What the registry knows from a card. Build with :func:`build_adapter_card`."""

    base_model: str | None = None
    base_revision: str | None = None
    base_model_relation: str | None = "adapter"
    library_name: str | None = "peft"
    pipeline_tag: str | None = "text-generation"
    license: str | None = None
    datasets: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    task: str | None = None
    eval_results: tuple[EvalMetric, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    model_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets or ()))
        object.__setattr__(self, "eval_results", tuple(self.eval_results or ()))
        # Tuples become lists: YAML stores them so, and equality must survive a round trip.
        object.__setattr__(self, "training", _plain(dict(self.training or {})))
        object.__setattr__(self, "extra", _plain(dict(self.extra or {})))
        object.__setattr__(self, "tags", _unique(self.derived_tags() + list(self.tags or ())))
        if self.eval_results and self.model_name is None:
            # model-index requires a name; a stable default keeps round trips exact.
            object.__setattr__(self, "model_name", f"loradock-{self.task or 'model'}")

    @property
    def kind(self) -> str:
        """``adapter``, ``merge`` or ``base`` (anything that is neither: a model in its own right)."""
        if self.base_model_relation in ("adapter", "merge"):
            return self.base_model_relation
        return "base"

    def derived_tags(self) -> list[str]:
        """Tags the card must carry so the Hub's ``list_models(filter=...)`` finds it."""
        tags: list[str] = []
        if self.kind == "adapter":
            tags += ["lora", "peft"]
        if self.base_model and self.base_model_relation:
            tags.append(f"base_model:{self.base_model_relation}:{self.base_model}")
        if self.task:
            tags.append(f"{TASK_TAG_PREFIX}{self.task}")
        return tags

    @property
    def metrics(self) -> dict[str, float]:
        """``{"task/metric": value}``, as the index stores them."""
        return {m.key: m.value for m in self.eval_results}

    def with_eval_results(self, results: Iterable[EvalMetric]) -> AdapterCard:
        """A copy whose eval results for the same (task, metric) are replaced by ``results``."""
        new = list(results)
        problems = [p for m in new for p in metric_problems(m)]
        if problems:
            raise CardError("Invalid eval results: " + "; ".join(problems))
        replaced = {(m.task, m.metric) for m in new}
        kept = [m for m in self.eval_results if (m.task, m.metric) not in replaced]
        return dataclasses.replace(self, eval_results=tuple(kept + new))

    def validate(self) -> None:
        """Raise one ``CardError`` listing every reason this card cannot be written."""
        problems = []
        if self.base_model_relation is not None and self.base_model_relation not in RELATIONS:
            problems.append(
                f"base_model_relation={self.base_model_relation!r} is not one of {RELATIONS}"
            )
        if self.kind in ("adapter", "merge") and not self.base_model:
            problems.append(
                f"base_model is required for a card with base_model_relation={self.kind!r}"
            )
        if self.base_model and not isinstance(self.base_model, str):
            problems.append(f"base_model={self.base_model!r} must be a string")
        elif self.base_model and not REPO_ID_RE.fullmatch(self.base_model):
            problems.append(
                f"base_model={self.base_model!r} is not a Hub repo id ('org/name'); "
                "name the base by id, not by a local path"
            )
        if self.task is not None and (not isinstance(self.task, str) or not self.task.strip()):
            problems.append(f"task={self.task!r} must be a non-empty string")
        for m in self.eval_results:
            problems += metric_problems(m)
        for key, value in (("training", self.training), ("extra", self.extra)):
            try:
                yaml.safe_dump(value)
            except yaml.YAMLError as exc:
                problems.append(f"{key} holds a value YAML cannot store: {exc}")
        if problems:
            raise CardError("Invalid model card: " + "; ".join(problems))

    def to_card_data(self) -> ModelCardData:
        self.validate()
        data: dict[str, Any] = dict(self.extra)
        if self.base_revision:
            data[BASE_REVISION_KEY] = self.base_revision
        if self.base_model_relation:
            data["base_model_relation"] = self.base_model_relation
        if self.training:
            data[TRAINING_KEY] = self.training
        results = [to_eval_result(m) for m in self.eval_results] or None
        return ModelCardData(
            base_model=self.base_model,
            library_name=self.library_name,
            pipeline_tag=self.pipeline_tag,
            license=self.license,
            datasets=list(self.datasets) or None,
            tags=list(self.tags) or None,
            eval_results=results,
            model_name=self.model_name,
            **data,
        )

    def to_text(self) -> str:
        """The README.md text (validated first: raises ``CardError`` listing every problem)."""
        data = self.to_card_data()
        return f"---\n{data.to_yaml()}\n---\n{self.body}"

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CARD_FILENAME
        path.write_text(self.to_text(), encoding="utf-8")
        return path

    @classmethod
    def from_text(cls, text: str) -> AdapterCard:
        """Parse a README.md; raises ``CardError`` quoting malformed YAML."""
        if not isinstance(text, str):
            raise CardError(f"A model card must be text, got {type(text).__name__}.")
        try:
            data, body = split_front_matter(text)
            card_data = ModelCardData(**data, ignore_metadata_errors=False)
        except CardError:
            raise  # anchors, aliases or an oversized card: its own message already
        except yaml.YAMLError as exc:
            raise CardError(
                f"Malformed card YAML: {_one_line(exc)}. Fix the front matter."
            ) from None
        except (ValueError, TypeError) as exc:
            raise CardError(
                f"Malformed card metadata: {_one_line(exc)}. Fix the front matter."
            ) from None
        return cls(**fields_from_card_data(card_data, body))

    @classmethod
    def from_repo_folder(cls, folder: str | Path) -> AdapterCard | None:
        """The card in ``folder/README.md``, or ``None`` when the folder has none."""
        path = Path(folder) / CARD_FILENAME
        if not path.is_file():
            return None
        check_card_size(path.stat().st_size)  # before reading a byte of it
        return cls.from_text(path.read_text(encoding="utf-8"))


def build_adapter_card(
    *,
    base_model: str,
    base_revision: str | None = None,
    task: str | None = None,
    datasets: Iterable[str] = (),
    license: str | None = "apache-2.0",
    pipeline_tag: str | None = "text-generation",
    tags: Iterable[str] = (),
    eval_results: Iterable[EvalMetric] = (),
    training: Mapping[str, Any] | None = None,
    body: str | None = None,
    relation: str = "adapter",
    model_name: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AdapterCard:
    """The one card builder for adapters (``relation="adapter"``) and merged models (``"merge"``).

    Validated at once, so a bad card fails where it is built, not at publish time.
    """
    if relation not in ("adapter", "merge"):
        raise CardError(f"relation={relation!r} must be 'adapter' or 'merge'.")
    card = AdapterCard(
        base_model=base_model,
        base_revision=base_revision,
        base_model_relation=relation,
        library_name="peft" if relation == "adapter" else "transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=tuple(datasets),
        tags=tuple(tags),
        task=task,
        eval_results=tuple(eval_results),
        training=dict(training or {}),
        extra=dict(extra or {}),
        body=body if body is not None else _default_body(relation, base_model, task),
        model_name=model_name,
    )
    card = without_local_paths(card)
    card.validate()
    return card


def build_base_card(
    *,
    license: str | None = "apache-2.0",
    pipeline_tag: str | None = "text-generation",
    library_name: str | None = "transformers",
    tags: Iterable[str] = (),
    datasets: Iterable[str] = (),
    base_model: str | None = None,
    relation: str | None = None,
    body: str | None = None,
    training: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AdapterCard:
    """A card for a base model (``kind == "base"``); ``base_model`` names where it came from,
    for example ``relation="quantized"`` for weights converted from a GGUF file."""
    if relation in ("adapter", "merge"):
        raise CardError(f"relation={relation!r} is not a base model; use build_adapter_card.")
    card = AdapterCard(
        base_model=base_model,
        base_model_relation=relation,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=tuple(datasets),
        tags=tuple(tags),
        training=dict(training or {}),
        extra=dict(extra or {}),
        body=body
        if body is not None
        else "\n# Base model\n\nA base model in the loradock registry.\n",
    )
    card = without_local_paths(card)
    card.validate()
    return card


def without_local_paths(card: AdapterCard) -> AdapterCard:
    """``card`` with every path of this machine (``output_dir``, data files, a job's YAML in
    the body) cut to its last component: what the builders return and what publish uploads."""
    return dataclasses.replace(
        card,
        training=strip_local_paths(card.training),
        extra=strip_local_paths(card.extra),
        body=strip_local_paths(card.body),
        datasets=strip_local_paths(card.datasets),
        eval_results=tuple(
            dataclasses.replace(m, dataset=strip_local_paths(m.dataset)) for m in card.eval_results
        ),
    )


def _default_body(relation: str, base_model: str, task: str | None) -> str:
    what = "LoRA adapter" if relation == "adapter" else "merged model (LoRA merged into the base)"
    for_task = f" for the `{task}` task" if task else ""
    return (
        f"\n# {what}{for_task}\n\n"
        f"A {what} on [`{base_model}`](https://huggingface.co/{base_model}), "
        "published with loradock. Evaluation results, when present, are in the metadata above.\n"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(str(item), None)
    return tuple(seen)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = [
    "CARD_FILENAME",
    "RELATIONS",
    "TASK_TAG_PREFIX",
    "AdapterCard",
    "EvalMetric",
    "build_adapter_card",
    "build_base_card",
    "without_local_paths",
]
