"""The vLLM engine: vLLM's async engine in this process, behind the same ``Engine`` protocol.

Two modes. Multi-LoRA: one base model, registry adapters become ``LoRARequest``s (one stable
integer id per adapter commit sha, so ``acme/x@prod`` and ``acme/x@<sha>`` share one slot), and
vLLM batches requests for different adapters together. Merged: a model published by
``loradock merge`` served as a plain model, no adapters.

Every adapter is checked against the engine's LoRA limits before vLLM sees it
(:mod:`loradock.serving.engines.vllm.limits`): vLLM itself would only fail inside a worker process.
vLLM keeps at most ``max_cpu_loras`` adapters loaded; this engine evicts the least recently
used one that no running request needs, so ``loaded_adapters()`` tells the truth.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loradock.errors import (
    AdapterNotFoundError,
    IncompatibleAdapterError,
    QueueFullError,
    RequestError,
)
from loradock.registry.artifact import AdapterArtifact, read_adapter
from loradock.serving.engines.base import (
    AdapterSpec,
    EngineCapabilities,
    GenerationChunk,
    GenerationRequest,
)
from loradock.serving.engines.frontend import PromptFrontend
from loradock.serving.engines.vllm.limits import (
    LoraLimits,
    derive_lora_limits,
    servable_modules,
    vllm_adapter_problems,
)
from loradock.serving.engines.vllm.null_adapter import NULL_ADAPTER_NAME, write_null_adapter
from loradock.serving.engines.vllm.options import CPU_KV_CACHE_BYTES, NULL_LORA_ID, VllmOptions

log = logging.getLogger(__name__)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VllmEngine:
    """vLLM's ``AsyncLLM`` serving a base model with LoRA adapters, or a merged model."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        base_name: str | None = None,
        options: VllmOptions | None = None,
        adapters: Sequence[AdapterSpec] = (),
        registry_ranks: Sequence[int | None] = (),
        merged: bool = False,
        max_loaded: int = 8,
        max_cpu_adapters: int = 64,
    ) -> None:
        from loradock.modeling import load_tokenizer

        self.model_path = Path(model_path)
        self.base_name = base_name or str(model_path)
        self.options = options or VllmOptions()
        self.merged = merged
        self.tokenizer = load_tokenizer(self.model_path)
        self.frontend = PromptFrontend(self.tokenizer, self.options.max_model_len)
        self.limits: LoraLimits | None = None
        if not merged:
            self.limits = derive_lora_limits(
                [a.rank for a in adapters] + list(registry_ranks),
                max_loaded=max_loaded,
                max_cpu_adapters=max_cpu_adapters,
                max_lora_rank=self.options.max_lora_rank,
                max_loras=self.options.max_loras,
                max_cpu_loras=self.options.max_cpu_loras,
            )
        self.capabilities = EngineCapabilities(
            name="vllm",
            max_lora_rank=self.limits.max_lora_rank if self.limits else None,
            max_loaded=self.limits.max_cpu_loras if self.limits else 0,
            max_model_len=self.options.max_model_len,
            merged=merged,
        )
        self._preload = list(adapters)
        self._servable = servable_modules(self.model_path)
        self._llm: Any = None
        self._null_lora: Any = None
        self._null_dir: str | None = None
        self._names: OrderedDict[str, AdapterSpec] = OrderedDict()  # LRU: oldest first
        self._resident: OrderedDict[str, Any] = OrderedDict()  # sha -> LoRARequest, LRU
        self._ids: dict[str, int] = {}  # sha -> lora_int_id, stable for the engine's life
        self._inflight: Counter[str] = Counter()  # sha -> running requests
        self._checked: dict[str, AdapterArtifact] = {}
        self._counts: Counter[str] = Counter()  # for stats(): loads, evictions, hits
        self._running = 0
        self._waiting = 0  # requests waiting for an adapter slot
        self._lock = asyncio.Lock()
        self._slot_freed = asyncio.Condition(self._lock)
        problems = []
        for spec in self._preload:  # fail before the slow engine start, all at once
            try:
                self.check_adapter(spec)
            except IncompatibleAdapterError as exc:
                problems += [f"{spec.name}: {p}" for p in exc.problems]
        if problems:
            raise IncompatibleAdapterError("Adapters cannot be served by vLLM", problems)

    # -- lifecycle -------------------------------------------------------------------------

    def engine_args(self) -> Any:
        """The ``AsyncEngineArgs`` this engine starts vLLM with (public: docs and tests)."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        opts = self.options
        cuda = _has_cuda()
        kwargs: dict[str, Any] = {
            "model": str(self.model_path),
            "tokenizer": str(self.model_path),
            "served_model_name": self.base_name,
            "max_model_len": opts.max_model_len,
            "dtype": opts.dtype,
            "tensor_parallel_size": opts.tensor_parallel_size,
            "enforce_eager": (not cuda) if opts.enforce_eager is None else opts.enforce_eager,
            "seed": opts.seed,
            "disable_log_stats": True,
        }
        if opts.max_num_seqs:
            kwargs["max_num_seqs"] = opts.max_num_seqs
        if opts.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
        if opts.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = opts.kv_cache_memory_bytes
        elif opts.gpu_memory_utilization is None and not cuda:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if self.limits is not None:
            extra = 1 if self.uses_null_adapter() else 0  # the null adapter's own slot
            loras = self.limits.max_loras + extra
            kwargs.update(
                enable_lora=True,
                max_lora_rank=self.limits.max_lora_rank,
                max_loras=loras,
                # This engine bounds what is loaded itself (max_cpu_loras); vLLM's cache gets
                # a batch of slack so its own LRU never evicts an adapter of the running
                # batch (its worker then dies with a KeyError in convert_mapping: measured).
                max_cpu_loras=self.limits.max_cpu_loras + extra + loras,
            )
        return AsyncEngineArgs(**kwargs)

    def uses_null_adapter(self) -> bool:
        if self.limits is None:
            return False
        flag = self.options.null_adapter_for_base
        return (not _has_cuda()) if flag is None else flag

    async def start(self) -> None:
        if self._llm is not None:
            return
        from vllm.v1.engine.async_llm import AsyncLLM

        # Starting spawns the engine-core and worker processes and loads the weights
        # (seconds to a minute); nothing else runs on this loop before it is up.
        self._llm = AsyncLLM.from_engine_args(self.engine_args())
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
        # cache slack above keeps it loaded, and vLLM reloads it from disk if ever evicted.
        await self._llm.add_lora(request)
        self._null_lora = request

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        self._null_lora = None
        if llm is not None:
            llm.shutdown()
        if self._null_dir:
            shutil.rmtree(self._null_dir, ignore_errors=True)
            self._null_dir = None

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
        """One id per adapter commit for the engine's life: vLLM caches weights by id."""
        if sha not in self._ids:
            self._ids[sha] = len(self._ids) + 1
        return self._ids[sha]

    async def load(self, adapter: AdapterSpec) -> None:
        self.check_adapter(adapter)
        self._require_started()
        async with self._slot_freed:
            await self._ensure_resident(adapter)
            self._names[adapter.name] = adapter
            self._names.move_to_end(adapter.name)

    async def _ensure_resident(self, adapter: AdapterSpec) -> Any:
        from vllm.lora.request import LoRARequest

        request = self._resident.get(adapter.sha)
        if request is not None:
            self._resident.move_to_end(adapter.sha)
            self._counts["slot_hits"] += 1
            return request
        assert self.limits is not None
        # Never hold more than max_cpu_loras: past it vLLM evicts an adapter a running request
        # still needs and its worker dies (KeyError in convert_mapping, measured). When every
        # resident adapter is busy, wait for one to finish instead.
        while len(self._resident) >= self.limits.max_cpu_loras:
            idle = next((s for s in self._resident if not self._inflight[s]), None)
            if idle is None:
                self._waiting += 1
                try:
                    await self._slot_freed.wait()
                finally:
                    self._waiting -= 1
                continue
            await self._evict(idle)
        request = LoRARequest(
            lora_name=f"{adapter.repo_id}@{adapter.sha}",
            lora_int_id=self.lora_int_id(adapter.sha),
            lora_path=str(adapter.path),
            base_model_name=self.base_name,
        )
        try:
            await self._llm.add_lora(request)
        except Exception as exc:  # vLLM's own loader refused it: keep the server up
            raise IncompatibleAdapterError(
                f"vLLM could not load adapter {adapter.name!r}", [f"{type(exc).__name__}: {exc}"]
            ) from exc
        self._resident[adapter.sha] = request
        self._counts["disk_loads"] += 1
        return request

    async def _evict(self, sha: str) -> None:
        request = self._resident.pop(sha)
        self._counts["evictions"] += 1
        for name in [n for n, s in self._names.items() if s.sha == sha]:
            del self._names[name]
        await self._llm.remove_lora(request.lora_int_id)

    async def unload(self, name: str) -> None:
        async with self._lock:
            spec = self._names.pop(name, None)
            if spec is None:
                loaded = ", ".join(self._names) or "none"
                raise AdapterNotFoundError(
                    f"Adapter {name!r} is not loaded on this server (loaded: {loaded})."
                )
            still_named = any(s.sha == spec.sha for s in self._names.values())
            if not still_named and not self._inflight[spec.sha] and spec.sha in self._resident:
                request = self._resident.pop(spec.sha)
                await self._llm.remove_lora(request.lora_int_id)

    def loaded_adapters(self) -> list[str]:
        return list(self._names)

    def stats(self) -> dict[str, float]:
        """Figures for /metrics (the optional ``stats()`` extension of the Engine protocol).

        vLLM schedules and batches internally; what this engine sees is the number of streams
        running, the requests waiting for an adapter slot, and the adapters it loaded into vLLM
        (vLLM holds them in one tier, so slots and CPU memory read the same).
        """
        return {
            "queue_depth": self._waiting
            + max(0, self._running - (self.options.max_num_seqs or self._running)),
            "running": self._running,
            "adapters_attached": len(self._resident),
            "adapters_in_cpu": len(self._resident),
            "adapter_disk_loads": self._counts["disk_loads"],
            "adapter_attaches": self._counts["disk_loads"],
            "adapter_evictions": self._counts["evictions"],
            "adapter_cpu_evictions": self._counts["evictions"],
            "adapter_slot_hits": self._counts["slot_hits"],
            "batch_max_batch_seen": self._counts["max_running"],
        }

    # -- text ------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def health(self) -> str | None:
        return None

    # -- generation ------------------------------------------------------------------------

    def _require_started(self) -> None:
        if self._llm is None:
            raise RuntimeError("VllmEngine.start() must be awaited before use")

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        return SamplingParams(
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            stop=list(s.stop) or None,
            seed=s.seed,
            output_kind=RequestOutputKind.DELTA,  # stream only what is new
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        from vllm.exceptions import VLLMValidationError

        self._require_started()
        ids = self.frontend.encode(request)
        if not ids:
            raise RequestError("The prompt is empty: send at least one token of text.")
        queue = self.options.max_queue
        if queue is not None and self._running >= (self.options.max_num_seqs or 1) + queue:
            # The same bound as the PEFT engine: vLLM itself would queue without limit.
            raise QueueFullError(
                f"The server's queue is full ({queue} requests waiting): "
                "retry after a short wait, or raise --max-queue."
            )
        sampling = request.sampling
        room = self.options.max_model_len - len(ids)
        if sampling.max_tokens > room:
            sampling = replace(sampling, max_tokens=room)  # as the PEFT engine: stop at context
        try:
            params = self._sampling_params(replace(request, sampling=sampling))
        except (ValueError, VLLMValidationError) as exc:
            raise RequestError(f"vLLM refused the request: {exc}") from exc

        lora = self._null_lora  # None unless base requests need it (vllm_null_adapter.py)
        sha = None
        if request.adapter is not None:
            self.check_adapter(request.adapter)
            async with self._slot_freed:
                lora = await self._ensure_resident(request.adapter)
                sha = request.adapter.sha
                self._inflight[sha] += 1
                self._names[request.adapter.name] = request.adapter
                self._names.move_to_end(request.adapter.name)
        self._running += 1
        self._counts["max_running"] = max(self._counts["max_running"], self._running)
        try:
            completion = 0
            stream = self._llm.generate(
                {"prompt_token_ids": list(ids)},
                params,
                request.request_id,
                lora_request=lora,
            )
            async for out in stream:
                piece = out.outputs[0]
                completion += len(piece.token_ids)
                finish = piece.finish_reason if out.finished else None
                yield GenerationChunk(
                    text=piece.text,
                    token_ids=list(piece.token_ids),
                    prompt_tokens=len(ids),
                    completion_tokens=completion,
                    finish_reason=("length" if finish == "length" else "stop") if finish else None,
                )
        except (ValueError, VLLMValidationError) as exc:  # vLLM's own request checks
            raise RequestError(f"vLLM refused the request: {exc}") from exc
        finally:
            self._running -= 1
            if sha is not None:
                self._inflight[sha] -= 1
                if not self._inflight[sha]:
                    # A task, not an await: this also runs when the stream is abandoned.
                    asyncio.get_running_loop().create_task(self._notify_slot_freed())

    async def _notify_slot_freed(self) -> None:
        async with self._slot_freed:
            self._slot_freed.notify_all()


def create_engine(config: Any, base_path: str | Path, *, registry: Any = None) -> VllmEngine:
    """The engine ``loradock serve --engine vllm`` runs (``serving.server.build_engine``).

    ``config`` is a ``ServerConfig``; ``base_path`` the resolved base (or merged) model folder.
    vLLM-only options are optional attributes of the config (absent: derived or vLLM's
    default): ``merged`` (serve merged weights, no adapters), ``max_lora_rank``, ``max_loras``,
    ``max_cpu_loras``, ``tensor_parallel_size``, ``gpu_memory_utilization``,
    ``kv_cache_memory_bytes``. With ``registry``, the LoRA limits are derived from the ranks of
    the adapters the server may serve: those ``config.adapters`` names and, when any registry
    adapter may be served, every registry adapter for this base.
    """
    opt = lambda name, default=None: getattr(config, name, default)  # noqa: E731
    options = VllmOptions.from_server_config(config)
    base_name = opt("base_model_name") or config.base
    if opt("merged"):
        return VllmEngine(base_path, base_name=base_name, options=options, merged=True)
    ranks: list[int | None] = []
    if registry is not None:
        for target in (opt("adapters") or {}).values():
            ranks.append(registry.resolve(target).artifact.max_rank)
        if opt("allow_any_registry_adapter", True):
            base_id = str(config.base).split("@", 1)[0]
            # Every adapter for the base, not a page of them: one rank above the limit would
            # be refused for the server's life.
            rows = registry.compatible(base_id, limit=None)
            ranks += [getattr(r, "rank", None) for r in rows]
    return VllmEngine(
        base_path,
        base_name=base_name,
        options=options,
        registry_ranks=ranks,
        max_loaded=opt("max_loaded", 8),
        max_cpu_adapters=opt("max_cpu_adapters", 64),
    )


def build_vllm_engine(config: Any, registry: Any) -> VllmEngine:
    """``create_engine`` with the base (or ``config.merged`` model) resolved through the registry."""
    base = registry.resolve_base(config.base)
    return create_engine(config, base.path, registry=registry)
