"""The card's YAML keys, and the tolerant read of a card's metadata into ``AdapterCard`` fields.

A card written by someone else still opens: missing keys get defaults and a warning naming the
key, unknown keys are kept in ``extra`` (and written back by ``AdapterCard``).
"""

from __future__ import annotations

import logging
from typing import Any

from huggingface_hub import ModelCardData

from loradock.registry.eval_results import from_eval_result

logger = logging.getLogger(__name__)

TASK_TAG_PREFIX = "task:"
# Custom keys: the Hub ignores them, loradock reads them back.
BASE_REVISION_KEY = "base_model_revision"
TRAINING_KEY = "loradock"

_KNOWN_KEYS = {
    "base_model",
    BASE_REVISION_KEY,
    "base_model_relation",
    "library_name",
    "pipeline_tag",
    "license",
    "datasets",
    "tags",
    "model-index",
    TRAINING_KEY,
}

# Attributes ModelCardData sets itself (not part of the YAML's unknown keys).
_CARD_ATTRS = set(ModelCardData().__dict__) | {"ignore_metadata_errors"}


def fields_from_card_data(data: ModelCardData, body: str) -> dict[str, Any]:
    """``AdapterCard`` keyword arguments from parsed card metadata, read tolerantly: missing
    keys get defaults and a warning naming the key, unknown keys go to ``extra``."""
    d = dict(data.__dict__)
    extra = {k: v for k, v in d.items() if k not in _KNOWN_KEYS and k not in _CARD_ATTRS}
    # Hub keys ModelCardData knows but loradock does not use: kept as they were.
    for k in ("language", "license_name", "license_link", "metrics"):
        if d.get(k) is not None:
            extra[k] = d[k]

    base_model = d.get("base_model")
    if isinstance(base_model, list):
        if len(base_model) > 1:
            logger.warning(
                "Card key 'base_model' lists %d models; using %r",
                len(base_model),
                base_model[0],
            )
            extra["base_models"] = base_model
        base_model = base_model[0] if base_model else None
    relation = d.get("base_model_relation")
    library = d.get("library_name")
    if relation is None and base_model and library == "peft":
        logger.warning("Card key 'base_model_relation' is missing; assuming 'adapter' (peft)")
        relation = "adapter"
    for key in ("license", "library_name", "pipeline_tag"):
        if d.get(key) is None:
            logger.warning("Card key %r is missing; leaving it empty", key)
    if relation in ("adapter", "merge") and not base_model:
        logger.warning("Card key 'base_model' is missing for a %s card", relation)

    tags = [str(t) for t in (d.get("tags") or [])]
    task_tags = [t[len(TASK_TAG_PREFIX) :] for t in tags if t.startswith(TASK_TAG_PREFIX)]
    training = d.get(TRAINING_KEY) or {}
    if not isinstance(training, dict):
        logger.warning("Card key %r is not a mapping; ignoring it", TRAINING_KEY)
        extra[TRAINING_KEY] = training
        training = {}
    datasets = d.get("datasets") or []
    if isinstance(datasets, str):
        datasets = [datasets]
    revision = d.get(BASE_REVISION_KEY)
    return dict(
        base_model=base_model,
        base_revision=str(revision) if revision is not None else None,
        base_model_relation=relation,
        library_name=library,
        pipeline_tag=d.get("pipeline_tag"),
        license=d.get("license"),
        datasets=tuple(str(x) for x in datasets),
        tags=tuple(tags),
        task=task_tags[0] if task_tags else None,
        eval_results=tuple(from_eval_result(r) for r in (d.get("eval_results") or [])),
        training=training,
        extra=extra,
        body=body,
        model_name=d.get("model_name"),
    )
