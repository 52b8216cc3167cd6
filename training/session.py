"""A training session: the base model, the data and trl's ``SFTTrainer`` built for a plan.

:func:`build_session` loads everything and builds the trainer without training; the job
(:mod:`loradock.training.job`) trains it and finishes it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError
from loradock.training.packing import PackingDecision, decide_for_rows
from loradock.training.preflight import JobPlan

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


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
