"""The card of a trained adapter, from the registry's builder: enough to re-run the job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loradock.training.config import JobConfig
from loradock.training.session import TrainingSession

SHIPPED_DATASET_PREFIX = "loradock"


def build_card(session: TrainingSession, heldout: dict[str, Any], repo_id: str):
    """The adapter's card from the registry's builder: enough to re-run the job."""
    from loradock.registry.card import build_adapter_card
    from loradock.training.report import card_body, job_yaml_text

    plan, cfg = session.plan, session.plan.config
    task = cfg.publish.task or cfg.data.task
    dataset_name = _dataset_name(cfg)
    job_yaml = job_yaml_text(cfg)
    training = _training_record(session, heldout, dataset_name, job_yaml)
    body = card_body(
        repo_id=repo_id,
        base_model=plan.base_model_id,
        task=task,
        heldout=heldout,
        job_yaml=job_yaml,
        data_hash=plan.data.sha256,
        train_summary=session.summary,
    )
    return build_adapter_card(
        base_model=plan.base_model_id,
        base_revision=plan.base_revision,
        task=task,
        datasets=[dataset_name],
        tags=["loradock", "trl", "sft", "qlora" if cfg.quantization.enabled else "lora"],
        eval_results=_eval_results(heldout, task, dataset_name),
        training=json.loads(json.dumps(training, default=str)),
        body=body,
    )


def _dataset_name(cfg: JobConfig) -> str:
    return (
        f"{SHIPPED_DATASET_PREFIX}/{cfg.data.task}"
        if cfg.data.task and not cfg.data.train
        else cfg.data.hub_id or (Path(cfg.data.train).stem if cfg.data.train else "data")
    )


def _eval_results(heldout: dict[str, Any], task: str | None, dataset_name: str) -> list[Any]:
    """The adapter's held-out task metrics and perplexity, as the card's eval results."""
    from loradock.registry.card import EvalMetric

    eval_results = []
    if heldout:
        for name, value in heldout["adapter"].metrics.items():
            eval_results.append(
                EvalMetric(task or "heldout", dataset_name, name, value, source="loradock-train")
            )
        if heldout["adapter"].perplexity is not None:
            eval_results.append(
                EvalMetric(
                    task or "heldout",
                    dataset_name,
                    "perplexity",
                    heldout["adapter"].perplexity,
                    source="loradock-train",
                )
            )
    return eval_results


def _training_record(
    session: TrainingSession, heldout: dict[str, Any], dataset_name: str, job_yaml: str
) -> dict[str, Any]:
    """The card's ``loradock`` section: the job, the run's settings, data, libraries, figures."""
    from loradock.training.report import LOSS_PLOT, library_versions

    plan, cfg = session.plan, session.plan.config
    return {
        "job": cfg.to_dict(),
        "job_yaml": job_yaml,
        "hyperparameters": {
            "lora": cfg.to_dict()["lora"],
            "quantization": cfg.quantization.mode,
            "trainer": cfg.to_dict()["trainer"],
            "bf16": plan.bf16,
            "packing": session.packing.packing,  # "auto" resolved for this run and data
            "dtype": plan.dtype_name,
            "device": plan.device,
        },
        "seed": cfg.seed,
        "dataset": {
            "name": dataset_name,
            "format": plan.data.format,
            "sha256": plan.data.sha256,
            "files": {k: Path(v).name for k, v in plan.data.files.items()},
        },
        "base_model": {"id": plan.base_model_id, "revision": plan.base_revision},
        "libraries": library_versions(),
        "summary": {k: v for k, v in session.summary.items() if v is not None},
        "heldout": {
            k: {"metrics": r.metrics, "perplexity": r.perplexity}
            for k, r in heldout.items()
            if k in ("base", "adapter")
        },
        "loss_plot": LOSS_PLOT,
    }
