"""Run a training job: preflight -> trl SFTTrainer -> held-out eval -> adapter + card -> publish.

The steps are public (:func:`build_session`, :func:`train`, :func:`finish`) so tests and the
benchmark can stop between them; :func:`run_job` is all of them in order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError
from loradock.training.config import JobConfig
from loradock.training.packing import PackingDecision, decide_for_rows
from loradock.training.preflight import JobPlan, preflight

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
SHIPPED_DATASET_PREFIX = "loradock"


@dataclass
class TrainResult:
    """What a job produced: the adapter folder, where it was published, and its figures."""

    adapter_dir: Path
    repo_id: str | None
    sha: str | None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingSession:
    """A built trainer and what it was built from (between :func:`build_session` and :func:`finish`)."""

    plan: JobPlan
    trainer: Any
    tokenizer: Any
    packing: PackingDecision
    summary: dict[str, Any] = field(default_factory=dict)
    # The base model's own attention implementation, put back after training (None: unchanged).
    attention_to_restore: str | None = None
    base_model: Any = None

    @property
    def model(self):
        return self.trainer.model

    @property
    def checkpoint_dir(self) -> Path:
        return self.plan.config.output_dir / CHECKPOINTS


def import_trl() -> Any:
    """``import trl``, keeping the process's ``VLLM_LOGGING_LEVEL`` as it was.

    When vLLM is installed, importing trl sets ``VLLM_LOGGING_LEVEL=ERROR`` in ``os.environ``
    (``trl._compat``), for the whole process and every process it starts: a process that
    trains and then serves with vLLM (the demo, a notebook, the test suite) would lose vLLM's
    warnings, the registry resolver's refusal reasons among them."""
    before = os.environ.get("VLLM_LOGGING_LEVEL")
    import trl

    if before is None:
        os.environ.pop("VLLM_LOGGING_LEVEL", None)
    else:
        os.environ["VLLM_LOGGING_LEVEL"] = before
    return trl


def sft_config(plan: JobPlan, *, packing: bool, progress: bool = True):
    """The trl ``SFTConfig`` for a plan, with ``packing`` resolved (:func:`decide_packing`)."""
    SFTConfig = import_trl().SFTConfig  # noqa: N806 (trl's class)

    cfg = plan.config
    has_eval = plan.data.validation is not None and cfg.trainer.eval_steps is not None
    return SFTConfig(
        output_dir=str(cfg.output_dir / CHECKPOINTS),
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        eval_strategy="steps" if has_eval else "no",
        logging_strategy="steps",
        logging_first_step=True,
        disable_tqdm=not progress,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        dataset_num_proc=None,
        use_cpu=plan.device == "cpu",
        **cfg.trainer.sft_kwargs(bf16=plan.bf16, packing=packing),
    )


def load_model(plan: JobPlan):
    """The base model (4-bit NF4 and prepared for k-bit training when QLoRA) and tokenizer."""
    from loradock.modeling import load_base

    quant = "nf4" if plan.config.quantization.enabled else None
    dtype = plan.dtype_name if quant else plan.weights_dtype
    model, tokenizer = load_base(
        plan.base_path, dtype=dtype, device=plan.device, quantization=quant
    )
    if quant:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=plan.config.trainer.gradient_checkpointing
        )
    return model, tokenizer


class _LossPrinter:
    """A trainer callback printing one line per logging step (the loss log beside the bar)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class LossPrinter(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and state.is_local_process_zero and ("loss" in logs or "eval_loss" in logs):
                    shown = {
                        k: round(v, 4) if isinstance(v, float) else v
                        for k, v in logs.items()
                        if k in ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")
                    }
                    log.info("step %d %s", state.global_step, shown)

        return LossPrinter()


def build_session(plan: JobPlan, *, progress: bool = True) -> TrainingSession:
    """Load the model and data and build the ``SFTTrainer`` (nothing trained yet)."""
    from loradock.training.packed_attention import use_training_attention

    SFTTrainer = import_trl().SFTTrainer  # noqa: N806 (trl's class)

    trainer_cfg = plan.config.trainer
    model, tokenizer = load_model(plan)
    train_rows = plan.data.trl_train()
    packing = decide_for_rows(
        trainer_cfg.packing,
        plan.device,
        train_rows,
        tokenizer,
        batch_size=trainer_cfg.per_device_train_batch_size,
        max_length=trainer_cfg.max_length,
    )
    # bfd packing is padding-free: attend within each packed example, not the whole row
    # ("wrapped" packing makes ordinary rows, so it trains like unpacked data).
    padding_free = packing.packing and trainer_cfg.packing_strategy != "wrapped"
    previous = use_training_attention(model, packed=padding_free, device=plan.device)
    peft_config = plan.config.lora.to_peft()
    trainer = SFTTrainer(
        model=model,
        args=sft_config(plan, packing=packing.packing, progress=progress),
        train_dataset=train_rows,
        eval_dataset=plan.data.trl_validation(),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_LossPrinter()],
    )
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        # Without a bar the trainer prints raw dicts on stdout; our loss log goes to logging.
        trainer.remove_callback(PrinterCallback)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not trainer.is_fsdp_enabled:
        log.warning(
            "FSDP was asked for (accelerate config) but this run is %s: on a CPU accelerate "
            "drops FSDP and trains plain data-parallel; FSDP shards only on GPUs",
            trainer.accelerator.distributed_type.value,
        )
    _check_trainable_tokens(trainer.train_dataset, trainer_cfg.max_length)
    return TrainingSession(
        plan=plan,
        trainer=trainer,
        tokenizer=tokenizer,
        packing=packing,
        attention_to_restore=previous,
        base_model=model,
    )


def _check_trainable_tokens(dataset, max_length: int) -> None:
    """Refuse data whose completions were all cut off by ``max_length`` (a silent zero loss)."""
    labelled = 0
    if len(dataset) and "labels" in dataset.column_names:
        labelled = sum(1 for row in dataset["labels"] if any(t != -100 for t in row))
    elif len(dataset) and "completion_mask" in dataset.column_names:
        labelled = sum(1 for row in dataset["completion_mask"] if any(row))
    elif len(dataset):
        return
    if labelled == 0:
        raise ConfigError(
            "Training data has nothing to learn",
            [
                f"trainer.max_length={max_length}: every example's completion falls beyond it "
                "(or the data set is empty after tokenization); raise max_length"
            ],
        )


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


def build_card(session: TrainingSession, heldout: dict[str, Any], repo_id: str):
    """The adapter's card from the registry's builder: enough to re-run the job."""
    from loradock.registry.card import EvalMetric, build_adapter_card
    from loradock.training.report import LOSS_PLOT, card_body, job_yaml_text, library_versions

    plan, cfg = session.plan, session.plan.config
    task = cfg.publish.task or cfg.data.task
    dataset_name = (
        f"{SHIPPED_DATASET_PREFIX}/{cfg.data.task}"
        if cfg.data.task and not cfg.data.train
        else cfg.data.hub_id or (Path(cfg.data.train).stem if cfg.data.train else "data")
    )
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
    job_yaml = job_yaml_text(cfg)
    training = {
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
        eval_results=eval_results,
        training=json.loads(json.dumps(training, default=str)),
        body=body,
    )


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
