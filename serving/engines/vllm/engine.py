"""The vLLM engine: vLLM's async engine in this process, behind the same ``Engine`` protocol.

Two modes. Multi-LoRA: one base model, registry adapters become ``LoRARequest``s (one stable
integer id per adapter commit sha, so ``acme/x@prod`` and ``acme/x@<sha>`` share one slot), and
vLLM batches requests for different adapters together. Merged: a model published by
``loradock merge`` served as a plain model, no adapters.

Every adapter is checked against the engine's LoRA limits before vLLM sees it
(:mod:`loradock.serving.engines.vllm.limits`): vLLM itself would only fail inside a worker
process. Which adapters vLLM holds is bounded here (:mod:`.residency`), so
``loaded_adapters()`` tells the truth.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loradock.errors import EngineError, IncompatibleAdapterError, QueueFullError, RequestError
from loradock.registry.artifact import AdapterArtifact, read_adapter
from loradock.serving.config import PeftEngineConfig, ServerConfig
from loradock.serving.engines.base import (
    AdapterSpec,
    EngineCapabilities,
    GenerationChunk,
    GenerationRequest,
)
from loradock.serving.engines.frontend import PromptFrontend
from loradock.serving.engines.vllm.args import build_engine_args, has_cuda
from loradock.serving.engines.vllm.limits import (
    LoraLimits,
    derive_lora_limits,
    servable_modules,
    vllm_adapter_problems,
)
from loradock.serving.engines.vllm.null_adapter import (
    NULL_ADAPTER_NAME,
    NULL_LORA_ID,
    write_null_adapter,
)
from loradock.serving.engines.vllm.options import VllmConfig
from loradock.serving.engines.vllm.residency import LoraResidency
from loradock.serving.engines.vllm.sampling import (
    check_prompt_logprobs,
    chunk_of,
    vllm_sampling_params,
)
from loradock.serving.engines.vllm.structured import vllm_structured

log = logging.getLogger(__name__)


class VllmEngine:
    """vLLM's ``AsyncLLM`` serving a base model with LoRA adapters, or a merged model.

    ``sizes`` are the engine sizes both engines share (``ServerConfig.peft``: ``max_model_len``,
    ``dtype``, ``max_batch_size`` as vLLM's ``max_num_seqs``, ``max_queue``, and ``max_loaded``
    / ``max_cpu_adapters`` from which the LoRA limits are derived); ``options`` the vLLM-only
    ones (``ServerConfig.vllm``).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        base_name: str | None = None,
        sizes: PeftEngineConfig | None = None,
        options: VllmConfig | None = None,
        adapters: Sequence[AdapterSpec] = (),
        registry_ranks: Sequence[int | None] = (),
        merged: bool = False,
    ) -> None:
        from loradock.modeling import load_tokenizer

        self.model_path = Path(model_path)
        self.base_name = base_name or str(model_path)
        self.sizes = sizes or PeftEngineConfig()
        self.options = options or VllmConfig()
        self.merged = merged
        self.tokenizer = load_tokenizer(self.model_path)
        self.frontend = PromptFrontend(self.tokenizer, self.sizes.max_model_len)
        self.limits: LoraLimits | None = None
        if not merged:
            self.limits = derive_lora_limits(
                [a.rank for a in adapters] + list(registry_ranks),
                max_loaded=self.sizes.max_loaded,
                max_cpu_adapters=self.sizes.max_cpu_adapters,
                max_lora_rank=self.options.max_lora_rank,
                max_loras=self.options.max_loras,
                max_cpu_loras=self.options.max_cpu_loras,
            )
        self.capabilities = EngineCapabilities(
            name="vllm",
            max_lora_rank=self.limits.max_lora_rank if self.limits else None,
            max_loaded=self.limits.max_cpu_loras if self.limits else 0,
            max_model_len=self.sizes.max_model_len,
            merged=merged,
        )
        self.residency = LoraResidency(
            capacity=self.limits.max_cpu_loras if self.limits else 0, base_name=self.base_name
        )
        self._preload = list(adapters)
        self._servable = servable_modules(self.model_path)
        self._llm: Any = None
        self._null_lora: Any = None
        self._null_dir: str | None = None
        self._stopped: str | None = None
        self._checked: dict[str, AdapterArtifact] = {}
        self._running = 0
        self._max_running = 0
        self._awaiting_slot = 0  # admitted requests waiting for an adapter slot (--max-queue)
        self._check_preloaded()

    def _check_preloaded(self) -> None:
        """Fail before the slow engine start, with every problem of every adapter."""
        problems = []
        for spec in self._preload:
            try:
                self.check_adapter(spec)
            except IncompatibleAdapterError as exc:
                problems += [f"{spec.name}: {p}" for p in exc.problems]
        if problems:
            raise IncompatibleAdapterError("Adapters cannot be served by vLLM", problems)

    # -- lifecycle -------------------------------------------------------------------------

    def engine_args(self) -> Any:
        """The ``AsyncEngineArgs`` this engine starts vLLM with (public: docs and tests)."""
        return build_engine_args(
            self.model_path,
            served_name=self.base_name,
            sizes=self.sizes,
            options=self.options,
            limits=self.limits,
            null_adapter=self.uses_null_adapter(),
        )

    def uses_null_adapter(self) -> bool:
        if self.limits is None:
            return False
        flag = self.options.null_adapter_for_base
        return (not has_cuda()) if flag is None else flag

    async def start(self) -> None:
        if self._llm is not None:
            return
        from vllm.v1.engine.async_llm import AsyncLLM

        # Starting spawns the engine-core and worker processes and loads the weights
        # (seconds to a minute); nothing else runs on this loop before it is up.
        self._llm = AsyncLLM.from_engine_args(self.engine_args())
        self._stopped = None
        self.residency.bind(self._llm)
        if self.uses_null_adapter():
            await self._add_null_adapter()
        for spec in self._preload:
            await self.load(spec)

    async def _add_null_adapter(self) -> None:
        from vllm.lora.request import LoRARequest

        self._null_dir = tempfile.mkdtemp(prefix="loradock-vllm-null-")
        path = write_null_adapter(self.model_path, Path(self._null_dir) / "adapter")
        request = LoRARequest(NULL_ADAPTER_NAME, NULL_LORA_ID, str(path))
        # Not pinned: vLLM 0.32 with a pinned adapter in the GPU slots crashes its worker on
        # a batch that fills the other slots (KeyError in convert_mapping, measured). The
        # cache slack in engine_args keeps it loaded, and vLLM reloads it if ever evicted.
        await self._llm.add_lora(request)
        self._null_lora = request

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        self._null_lora = None
        if llm is not None:
            llm.shutdown()
            self._stopped = "stopped"
        if self._null_dir:
            shutil.rmtree(self._null_dir, ignore_errors=True)
            self._null_dir = None

    def health(self) -> str | None:
        if self._llm is not None and self._llm.errored:
            return "vLLM's engine core has stopped (see the server log): restart the server"
        return self._stopped

    # -- adapters --------------------------------------------------------------------------

    def check_adapter(self, adapter: AdapterSpec) -> AdapterArtifact:
        """Refuse (IncompatibleAdapterError, every reason listed) what vLLM could not serve."""
        if self.merged or self.limits is None:
            raise IncompatibleAdapterError(
                f"Adapter {adapter.name!r} cannot be used",
                [
                    f"this server serves the merged model {self.base_name!r}: it takes no "
                    "adapters; start one with --engine vllm --base BASE to serve adapters"
                ],
            )
        cached = self._checked.get(adapter.sha)
        if cached is not None:
            return cached
        artifact = read_adapter(adapter.path)
        problems = vllm_adapter_problems(
            artifact, max_lora_rank=self.limits.max_lora_rank, servable=self._servable
        )
        if problems:
            raise IncompatibleAdapterError(
                f"Adapter {adapter.name!r} ({adapter.repo_id}@{adapter.sha[:12]}) cannot be "
                "served by this vLLM engine",
                problems,
            )
        self._checked[adapter.sha] = artifact
        return artifact

    def lora_int_id(self, sha: str) -> int:
        return self.residency.lora_int_id(sha)

    async def load(self, adapter: AdapterSpec) -> None:
        self.check_adapter(adapter)
        self._require_started()
        await self.residency.load(adapter)

    async def unload(self, name: str) -> None:
        await self.residency.unload(name)

    def loaded_adapters(self) -> list[str]:
        return self.residency.loaded()

    def stats(self) -> dict[str, float]:
        """Figures for /metrics.

        vLLM schedules and batches internally; what this engine sees is the number of streams
        running, the requests waiting for an adapter slot, and the adapters it loaded into vLLM
        (vLLM holds them in one tier, so slots and CPU memory read the same).
        """
        counts, resident = self.residency.counts, self.residency.resident_count()
        return {
            "queue_depth": self._awaiting_slot + max(0, self._running - self.sizes.max_batch_size),
            "running": self._running,
            "adapters_attached": resident,
            "adapters_in_cpu": resident,
            "adapter_disk_loads": counts["disk_loads"],
            "adapter_attaches": counts["disk_loads"],
            "adapter_evictions": counts["evictions"],
            "adapter_cpu_evictions": counts["evictions"],
            "adapter_slot_hits": counts["slot_hits"],
            "batch_max_batch_seen": self._max_running,
        }

    # -- generation ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def _require_started(self) -> None:
        if self._llm is None:
            raise RuntimeError("VllmEngine.start() must be awaited before use")

    def _admit(self, request: GenerationRequest) -> tuple[list[int], Any]:
        """The prompt's ids and vLLM's sampling parameters, or the up-front error (400, 429)."""
        from vllm.exceptions import VLLMValidationError

        ids = self.frontend.encode(request)
        if not ids:
            raise RequestError("The prompt is empty: send at least one token of text.")
        queue = self.sizes.max_queue
        if self._running + self._awaiting_slot >= self.sizes.max_batch_size + queue:
            # The same bound as the PEFT engine, requests waiting for an adapter slot
            # included: vLLM itself would queue without limit.
            raise QueueFullError(
                f"The server's queue is full ({queue} requests waiting): "
                "retry after a short wait, or raise --max-queue."
            )
        room = self.sizes.max_model_len - len(ids)
        max_tokens = min(request.sampling.max_tokens, room)  # as the PEFT engine: stop at context
        try:
            params = vllm_sampling_params(replace(request.sampling, max_tokens=max_tokens))
            params.structured_outputs = vllm_structured(request.structured)
            return ids, params
        except (ValueError, VLLMValidationError) as exc:
            raise RequestError(f"vLLM refused the request: {exc}") from exc

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        self._require_started()
        ids, params = self._admit(request)
        lora = self._null_lora  # None unless base requests need it (null_adapter.py)
        adapter = request.adapter
        if request.sampling.prompt_logprobs is not None:
            check_prompt_logprobs(adapter is not None or lora is not None)
        if adapter is not None:
            self.check_adapter(adapter)
            self._awaiting_slot += 1
            try:
                lora = await self.residency.acquire(adapter)
            finally:
                self._awaiting_slot -= 1
        self._running += 1
        self._max_running = max(self._max_running, self._running)
        try:
            stream = self._llm.generate(
                {"prompt_token_ids": ids}, params, request.request_id, lora_request=lora
            )
            completion = 0
            async for out in stream:
                chunk = chunk_of(out, ids, request.sampling, first=completion == 0)
                completion += len(chunk.token_ids)
                chunk.completion_tokens = completion
                yield chunk
        except (ValueError, VLLMValidationError) as exc:  # vLLM's own request checks
            raise RequestError(f"vLLM refused the request: {exc}") from exc
        except EngineDeadError as exc:
            error = EngineError(f"The model engine stopped ({exc}): restart the server.")
            error.retry_after_s = None  # nothing restarts vLLM: no Retry-After (http/errors.py)
            raise error from exc
        finally:
            self._running -= 1
            if adapter is not None:
                self.residency.release(adapter.sha)


def create_engine(
    config: ServerConfig, base_path: str | Path, *, registry: Any = None
) -> VllmEngine:
    """The engine ``loradock serve --engine vllm`` runs (``serving.server.build_engine``).

    ``base_path`` is the resolved base (or merged) model folder. With ``registry``, the LoRA
    limits are derived from the ranks of the adapters the server may serve: the
    ``config.adapters`` ones and, unless the server serves only those, every registry
    adapter for this base.
    """
    parts = {"sizes": config.peft, "options": config.vllm, "base_name": config.base_model_name}
    if config.merged:
        return VllmEngine(base_path, merged=True, **parts)
    ranks: list[int | None] = []
    if registry is not None:
        for target in config.adapters.values():
            ranks.append(registry.resolve(target).artifact.max_rank)
        if config.http.adapter_scope != "listed":
            base_id = config.base.split("@", 1)[0]
            # Every adapter for the base, not a page of them: one rank above the limit would
            # be refused for the server's life.
            ranks += [row.rank for row in registry.compatible(base_id, limit=None)]
    return VllmEngine(base_path, registry_ranks=ranks, **parts)
