"""The in-process eval backend: transformers + PEFT, the base loaded once and adapters
swapped on it by name (PEFT named adapters), as the serving engine does."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loradock.evals.results import EvalTarget

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo


@dataclass
class InProcessBackend:
    """transformers + PEFT: the base loaded once, adapters attached and swapped by name."""

    base_path: str
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 8
    chat_template: bool | None = None  # None: apply it when the tokenizer has one
    name: str = "hf"

    def __post_init__(self) -> None:
        self._model = None
        self._tokenizer = None
        self._peft = None
        self._slots: dict[str, str] = {}  # adapter label -> PEFT adapter name

    def check_tasks(self, specs: Sequence[TaskInfo]) -> None:
        return None  # a local model answers every request type

    def _load(self) -> None:
        if self._model is None:
            from loradock.modeling import load_base

            self._model, self._tokenizer = load_base(
                self.base_path, dtype=self.dtype, device=self.device
            )

    def _uses_chat_template(self) -> bool:
        if self.chat_template is not None:
            return self.chat_template
        return bool(getattr(self._tokenizer, "chat_template", None))

    def _activate(self, target: EvalTarget) -> Any:
        from peft import PeftModel

        if target.label not in self._slots:
            slot = f"a{len(self._slots)}"
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self._model, str(target.path), adapter_name=slot, is_trainable=False
                )
            else:
                self._peft.load_adapter(str(target.path), adapter_name=slot, is_trainable=False)
            self._slots[target.label] = slot
        self._peft.set_adapter(self._slots[target.label])
        self._peft.eval()
        return self._peft

    @contextmanager
    def model_for(self, target: EvalTarget):
        from lm_eval.models.huggingface import HFLM

        self._load()
        if target.kind == "adapter":
            model, scope = self._activate(target), nullcontext()
        elif self._peft is not None:
            # LoRA layers are injected in place: the base is the PEFT model with them off.
            model, scope = self._peft, self._peft.disable_adapter()
        else:
            model, scope = self._model, nullcontext()
        with scope:
            lm = HFLM(
                pretrained=model,
                tokenizer=self._tokenizer,
                backend="causal",
                batch_size=self.batch_size,
                # bf16 log-softmax rounds away small adapter effects on log-likelihoods.
                softmax_dtype="float32",
            )
            yield lm, self._uses_chat_template()

    def close(self) -> None:
        self._model = self._peft = self._tokenizer = None
        self._slots.clear()
