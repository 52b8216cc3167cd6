"""PeftEngine: one base model in memory, PEFT LoRA adapters hot-swapped in and out.

Requests for different adapters share each forward pass (see ``batcher.py``): each row goes
through its own adapter's weights with batched matmuls (``multi_lora.py``; PEFT's own
``adapter_names`` path loops per adapter and measured 0.44x). Adapters are PEFT folders, read
with PEFT's ``LoraConfig``, and move through the tiers of ``adapter_cache.py``. The engine implements ``engine.Engine`` and knows
nothing of HTTP: the app resolves names through the registry and hands it ``AdapterSpec``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from loradock.errors import RequestError
from loradock.serving.engines.base import (
    AdapterSpec,
    EngineCapabilities,
    GenerationChunk,
    GenerationRequest,
)
from loradock.serving.engines.frontend import PromptFrontend
from loradock.serving.engines.peft.adapter_cache import AdapterCache, CpuAdapter, adapter_key
from loradock.serving.engines.peft.attention import use_grouped_attention
from loradock.serving.engines.peft.decoding import TextState
from loradock.serving.engines.peft.kv_cache import SlabCache
from loradock.serving.engines.peft.multi_lora import MultiLora
from loradock.serving.engines.peft.scheduler import BASE_ADAPTER, ContinuousBatcher, Sequence

log = logging.getLogger(__name__)


def _slot_index(name: str) -> int:
    """``"slot3"`` -> 4 (row 0 of the stacked weights is the base: all zeros)."""
    return 0 if name == BASE_ADAPTER else int(name[4:]) + 1


class PeftEngine:
    """The hot-swap engine; build it, ``await start()``, then ``generate`` from many tasks."""

    def __init__(
        self,
        base_path: str | Path,
        *,
        base_name: str,
        max_loaded: int = 8,
        max_cpu_adapters: int = 64,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        max_model_len: int = 512,
        dtype: str | None = "auto",
        device: str | None = None,
        threads: int | None = None,
    ):
        self.base_path = Path(base_path)
        self.base_name = base_name
        self.capabilities = EngineCapabilities(
            name="peft", max_lora_rank=None, max_loaded=max_loaded, max_model_len=max_model_len
        )
        self._options = {
            "max_cpu": max_cpu_adapters,
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "max_queue": max_queue,
            "threads": threads,
        }
        self._dtype_name = dtype
        self._device = device
        self.model: Any = None  # the base model, or the PeftModel once an adapter is attached
        self.tokenizer: Any = None
        self._lora: MultiLora | None = None
        self._checked: set[str] = set()  # adapter keys parse() accepted
        self._cache: AdapterCache | None = None
        self._batcher: ContinuousBatcher | None = None
        self._names: dict[str, set[str]] = {}  # adapter key -> names requests used for it

    @classmethod
    def from_config(cls, config: Any, base_path: str | Path) -> PeftEngine:
        """Build from a ``ServerConfig`` (not imported here: engines do not depend on HTTP)."""
        return cls(base_path, base_name=config.base_model_name, **config.peft_engine_options())

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._load_base)

    def _load_base(self) -> None:
        from loradock.modeling import load_base, pick_device, pick_dtype

        self._device = self._device or pick_device()
        dtype = pick_dtype(self._device, self._dtype_name)
        self.model, self.tokenizer = load_base(self.base_path, dtype=dtype, device=self._device)
        self.frontend = PromptFrontend(self.tokenizer, self.capabilities.max_model_len)
        self.model.eval()
        use_grouped_attention(self.model)  # GQA without copying the KV cache every step
        self._lora = MultiLora(self.model, self.capabilities.max_loaded)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and limit < self.capabilities.max_model_len:
            raise RequestError(
                f"max_model_len={self.capabilities.max_model_len} exceeds the base model's "
                f"context of {limit} tokens: pass --max-model-len {limit} or less."
            )
        self._cache = AdapterCache(
            max_loaded=self.capabilities.max_loaded,
            max_cpu=self._options["max_cpu"],
            dtype=dtype,
            attach=self._attach,
            detach=self._detach,
        )
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)
        self._batcher = ContinuousBatcher(
            forward=self._forward,
            cache=self._cache,
            tokenizer=self.tokenizer,
            eos_ids={i for i in eos_ids if i is not None},
            pad_id=self.tokenizer.pad_token_id,
            device=self._device,
            max_batch_size=self._options["max_batch_size"],
            max_wait_ms=self._options["max_wait_ms"],
            max_queue=self._options["max_queue"],
            threads=self._options["threads"],
        )
        self._batcher.start()

    async def shutdown(self) -> None:
        if self._batcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._batcher.stop)

    # ---- model thread ---------------------------------------------------------------------
    def _forward(self, ids, mask, positions, past, adapter_names: list[str]):
        self._lora.set_rows([_slot_index(n) for n in adapter_names])
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past if past is not None else SlabCache(),
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :], out.past_key_values

    def _attach(self, slot: str, adapter: CpuAdapter, reuse: bool) -> None:
        """Copy ``adapter``'s weights into ``slot`` (layers are wrapped on first use)."""
        self._lora.attach(_slot_index(slot), adapter.spec.name, adapter.config, adapter.state_dict)

    def _detach(self, slot: str) -> None:
        self._lora.detach(_slot_index(slot))

    # ---- Engine API -----------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def health(self) -> str | None:
        return None

    def loaded_adapters(self) -> list[str]:
        if self._cache is None:
            return []
        return sorted(
            n for spec in self._cache.attached() for n in self._names.get(adapter_key(spec), ())
        )

    async def _fetch(self, adapter: AdapterSpec) -> CpuAdapter:
        """The adapter in CPU memory, checked once against what this engine can run."""
        cpu = await self._cache.fetch(adapter)
        if cpu.key not in self._checked:
            self._lora.parse(adapter.name, cpu.config, cpu.state_dict)  # raises 422, lists why
            self._checked.add(cpu.key)
        self._names.setdefault(cpu.key, set()).add(adapter.name)
        return cpu

    def _in_memory(self, adapter: AdapterSpec) -> CpuAdapter | None:
        """The adapter if it is in CPU memory and already checked (no waiting), else None."""
        cpu = self._cache.peek(adapter)
        if cpu is None or cpu.key not in self._checked:
            return None
        self._names.setdefault(cpu.key, set()).add(adapter.name)
        return cpu

    async def load(self, adapter: AdapterSpec) -> None:
        """Read the adapter into memory and attach it to a slot now (admin preload)."""
        cpu = await self._fetch(adapter)
        attached = await self._batcher.call(lambda: self._cache.try_attach(cpu))
        if not attached:
            raise RequestError(
                f"Cannot attach {adapter.name!r} now: all {self.capabilities.max_loaded} slots "
                "serve running requests. Retry shortly or raise --max-loaded."
            )

    async def unload(self, name: str) -> None:
        keys = [key for key, names in self._names.items() if name in names]
        from loradock.errors import AdapterNotFoundError

        if not keys:
            raise AdapterNotFoundError(f"Adapter {name!r} is not loaded: nothing to unload.")
        for key in keys:
            await self._batcher.call(lambda key=key: self._cache.forget(key))
            self._names.pop(key, None)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        ids = self.frontend.encode(request)
        limit = self.capabilities.max_model_len
        cpu, reading = None, None
        if request.adapter is not None:
            cpu = self._in_memory(request.adapter)
            if cpu is None:  # read it while the request already waits in the queue
                reading = asyncio.ensure_future(self._fetch(request.adapter))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the client is gone
                loop.call_soon_threadsafe(queue.put_nowait, item)

        seq = Sequence(
            request=request,
            prompt_ids=list(ids),
            adapter=cpu,
            max_new=min(request.sampling.max_tokens, limit - len(ids)),
            text=TextState(self.tokenizer, stop=request.sampling.stop),
            emit=emit,
            loop=loop,
            queue=queue,
            loading=reading is not None,
        )
        if reading is not None:
            # Even if the queue refuses ``seq`` below, the read goes on: its adapter is cached
            # for the next request, and the callback collects its outcome.
            reading.add_done_callback(lambda task: self._read_done(seq, task))
        self._batcher.submit(seq)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            seq.cancelled = True

    def _read_done(self, seq: Sequence, task: asyncio.Task) -> None:
        """The adapter read for ``seq`` ended: admit it, or fail its request with the error
        (a missing file, a 422 from the check)."""
        if task.cancelled():
            self._batcher.loaded(seq, None)
            return
        exc = task.exception()
        if exc is not None:
            seq.emit(exc)
            self._batcher.loaded(seq, None)
        else:
            self._batcher.loaded(seq, task.result())

    def stats(self) -> dict[str, float]:
        """Gauges and counters for /metrics (an optional extension of the Engine protocol)."""
        out: dict[str, float] = {}
        if self._batcher is not None:
            out["queue_depth"] = self._batcher.queue_depth()
            out["running"] = self._batcher.running()
            out.update({f"batch_{k}": v for k, v in self._batcher.stats.items()})
        if self._cache is not None:
            out.update({f"adapter_{k}": v for k, v in self._cache.stats.items()})
            out["adapters_attached"] = len(self._cache.attached())
            out["adapters_in_cpu"] = len(self._cache.in_memory())
        return out
