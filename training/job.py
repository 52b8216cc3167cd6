"""Run a training job: preflight -> trl SFTTrainer -> held-out eval -> adapter + card -> publish.

The steps are public (:func:`~loradock.training.session.build_session`, :func:`train`,
:func:`finish`) so tests and the benchmark can stop between them; :func:`run_job` is all of
them in order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradock.training.config import JobConfig
from loradock.training.job_card import build_card
from loradock.training.preflight import preflight
from loradock.training.session import TrainingSession, build_session

ADAPTER = "adapter"


@dataclass
class TrainResult:
    """What a job produced: the adapter folder, where it was published, and its figures."""

    adapter_dir: Path
    repo_id: str | None
    sha: str | None
    metrics: dict[str, Any] = field(default_factory=dict)


def train(session: TrainingSession, *, resume: bool = False) -> dict[str, Any]:
    """Run the training loop (from this job's last complete checkpoint when ``resume``; a
    checkpoint of another job or other settings is refused: ``resume.py``); returns its
    summary."""
    from loradock.training.resume import prepare_checkpoints

    checkpoint = None
    if resume or session.trainer.is_world_process_zero():
        # A fresh run clears old checkpoints once (the main process); every process checks.
        checkpoint = prepare_checkpoints(session.checkpoint_dir, session.plan, resume=resume)
    from loradock.training.lm_head_tiles import cpu_lm_head_tiles
    from loradock.training.packed_attention import restore_attention

    started = time.perf_counter()
    try:
        with cpu_lm_head_tiles(session.plan.device):
            output = session.trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        # Evaluation, generation and anything after training see the model as it was loaded.
        restore_attention(session.base_model, session.attention_to_restore)
    state = session.trainer.state
    runtime = output.metrics.get("train_runtime") or (time.perf_counter() - started)
    tokens = int(state.num_input_tokens_seen or 0)
    session.summary = {
        "global_step": state.global_step,
        "world_size": session.trainer.args.world_size,  # processes that trained (accelerate)
        "distributed": session.trainer.accelerator.distributed_type.value,
        "train_loss": output.training_loss,
        "train_runtime": runtime,
        "num_input_tokens_seen": tokens,
        "tokens_per_second": tokens / runtime if runtime else None,
        "epoch_tokens": dataset_tokens(session.trainer.train_dataset),
        "resumed_from": checkpoint,
        "packing": session.packing.to_dict(),
        "first_loss": next((e["loss"] for e in state.log_history if "loss" in e), None),
        "last_loss": next((e["loss"] for e in reversed(state.log_history) if "loss" in e), None),
    }
    return session.summary


def dataset_tokens(dataset) -> int:
    """Real (non-padding) tokens in one epoch of a prepared trl data set, packed or not.

    The same rows give the same count either way, unlike ``num_input_tokens_seen``, which cannot
    tell a pad token from a real one when they share an id (SmolLM2 pads with ``<|im_end|>``).
    """
    if dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
        return 0
    return sum(len(ids) for ids in dataset["input_ids"])


def save_adapter(session: TrainingSession) -> Path:
    """The adapter in PEFT format, naming its base by repo id (or folder when not published)."""
    out = session.plan.config.output_dir / ADAPTER
    out.mkdir(parents=True, exist_ok=True)
    trainer = session.trainer
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # Sharded weights: the trainer gathers them; drop its pickled args (never published).
        trainer.save_model(str(out))
        (out / "training_args.bin").unlink(missing_ok=True)
    else:
        model.save_pretrained(str(out))
    # PEFT wrote the local snapshot path; name the base by repo id and revision instead
    # (after saving: PEFT reads the base's config from that path while saving).
    config_path = out / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = session.plan.base_model_id
    if session.plan.base_revision:
        adapter_config["revision"] = session.plan.base_revision
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return out


def heldout_eval(session: TrainingSession) -> dict[str, Any]:
    """Task metric + perplexity on the test split (validation if none), base vs adapter."""
    from loradock.training.data import eval_examples
    from loradock.training.heldout import evaluate_base_and_adapter
    from loradock.training.tasks import TASKS

    cfg = session.plan.config
    if not cfg.eval.enabled:
        return {}
    data = session.plan.data
    split, ds = ("test", data.test) if data.test is not None else ("validation", data.validation)
    if cfg.eval.limit is not None and len(ds) > cfg.eval.limit:
        ds = ds.select(range(cfg.eval.limit))
    examples = eval_examples(ds, data.format)
    task_name = cfg.publish.task or cfg.data.task
    results = evaluate_base_and_adapter(
        session.model,
        session.tokenizer,
        examples,
        task=TASKS.get(task_name) if task_name else None,
        max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size,
    )
    return {"split": split, "examples": len(examples), **results}


def finish(session: TrainingSession, *, registry: Any = None) -> TrainResult:
    """Evaluate, save the adapter with loss log/plot and card, and publish it (when enabled)."""
    from loradock.training.report import LOSS_PLOT, plot_loss, write_loss_log

    cfg = session.plan.config
    heldout = heldout_eval(session)
    adapter_dir = save_adapter(session)
    history = session.trainer.state.log_history
    write_loss_log(history, cfg.output_dir / "loss_log.jsonl")
    plot_loss(history, adapter_dir / LOSS_PLOT, title=f"{cfg.name}: training loss")
    metrics: dict[str, Any] = {"train": session.summary}
    if heldout:
        metrics["heldout"] = {
            "split": heldout["split"],
            "examples": heldout["examples"],
            **{
                k: {"metrics": r.metrics, "perplexity": r.perplexity, "samples": r.samples}
                for k, r in heldout.items()
                if k in ("base", "adapter")
            },
        }
    (cfg.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    repo_id = sha = None
    if cfg.publish.enabled:
        card = build_card(session, heldout, cfg.publish.repo_id)
        card.save(adapter_dir)
        if registry is None:
            from loradock.registry.api import Registry

            registry = Registry.open()
        published = registry.publish(
            adapter_dir,
            cfg.publish.repo_id,
            card=card,
            private=cfg.publish.private,
            aliases=tuple(cfg.publish.aliases),
            commit_message=f"loradock train {cfg.name}",
        )
        repo_id, sha = published.repo_id, published.sha
    return TrainResult(adapter_dir=adapter_dir, repo_id=repo_id, sha=sha, metrics=metrics)


def run_job(
    config: JobConfig, *, resume: bool = False, registry: Any = None, progress: bool = True
) -> TrainResult:
    """The whole job in one call; every problem with the job is raised before training starts."""
    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    plan = preflight(config, registry=registry)
    session = build_session(plan, progress=progress)
    train(session, resume=resume)
    if not session.trainer.is_world_process_zero():
        # Under `accelerate launch` only the main process evaluates, writes and publishes.
        return TrainResult(
            adapter_dir=config.output_dir / ADAPTER,
            repo_id=None,
            sha=None,
            metrics={"train": session.summary},
        )
    return finish(session, registry=registry)
