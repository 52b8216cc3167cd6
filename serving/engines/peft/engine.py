"""PeftEngine: one base model in memory, PEFT LoRA adapters hot-swapped in and out.

Requests for different adapters share each forward pass: each row goes through its own
adapter's weights with batched matmuls or the fused CPU kernel (``multi_lora.py``; PEFT's own
``adapter_names`` path loops per adapter and measured 0.44x). The model thread's work is in
layers: ``scheduler.py`` (queue, admission, the step loop), ``runner.py`` (forward passes, KV
cache), ``output.py`` (sampling, text, chunks), ``delivery.py`` (chunks to the waiting
requests). Adapters are PEFT folders, read, checked and kept by ``adapter_cache.py``.

The engine implements ``engines.base.Engine`` and knows nothing of HTTP: the app resolves
names through the registry and hands it ``AdapterSpec``s. ``submit`` is the engine's one
entry for a request, whoever waits for its chunks: ``generate`` (in this process, a
``LoopSink``) or the engine process (``child.py``, a ``PipeSink``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.errors import AdapterNotFoundError, RequestError
from loradock.serving.engines.base import (
    AdapterSpec,
    GenerationChunk,
    GenerationRequest,
)
from loradock.serving.engines.frontend import PromptFrontend
from loradock.serving.engines.peft.adapter_cache import AdapterCache, CpuAdapter, adapter_key
from loradock.serving.engines.peft.attention import use_grouped_attention
from loradock.serving.engines.peft.delivery import LoopSink, Sink
from loradock.serving.engines.peft.grammar import GrammarCache, SequenceGrammar
from loradock.serving.engines.peft.limits import capabilities
from loradock.serving.engines.peft.multi_lora import MultiLora
from loradock.serving.engines.peft.output import OutputStage, TextState
from loradock.serving.engines.peft.runner import Runner
from loradock.serving.engines.peft.sampling import check_sampling
from loradock.serving.engines.peft.scheduler import Scheduler
from loradock.serving.engines.peft.sequence import Sequence

if TYPE_CHECKING:  # engines do not import the server's configuration at run time
    from loradock.serving.config import PeftEngineConfig


class PeftEngine:
    """The hot-swap engine; build it, ``await start()``, then ``generate`` from many tasks."""

    def __init__(self, base_path: str | Path, options: PeftEngineConfig, *, base_name: str):
        self.base_path = Path(base_path)
        self.base_name = base_name
        self.options = options
        self.capabilities = capabilities(options)
        self.model: Any = None
        self.tokenizer: Any = None
        self.frontend: PromptFrontend | None = None
        self._cache: AdapterCache | None = None
        self._scheduler: Scheduler | None = None
        self._grammars: GrammarCache | None = None
        self._sink: LoopSink | None = None  # the sink of the event loop ``generate`` runs on
        # adapter key -> names requests used for it (frozensets: other threads read them)
        self._names: dict[tuple[str, str], frozenset[str]] = {}

    @classmethod
    def from_config(cls, config: Any, base_path: str | Path) -> PeftEngine:
        """Build from a ``ServerConfig``'s PEFT options."""
        return cls(base_path, config.peft, base_name=config.base_model_name)

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._load_base)

    def _load_base(self) -> None:
        from loradock.modeling import load_base, pick_device, pick_dtype

        options = self.options
        device = options.device or pick_device()
        dtype = pick_dtype(device, options.dtype)
        self.model, self.tokenizer = load_base(self.base_path, dtype=dtype, device=device)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and limit < options.max_model_len:
            raise RequestError(
                f"max_model_len={options.max_model_len} exceeds the base model's "
                f"context of {limit} tokens: pass --max-model-len {limit} or less."
            )
        self.frontend = PromptFrontend(self.tokenizer, options.max_model_len)
        self.model.eval()
        self._grammars = GrammarCache(
            self.tokenizer, vocab_size=self.model.config.vocab_size, stop_ids=self._eos_ids()
        )
        use_grouped_attention(self.model)  # GQA without copying the KV cache every step
        lora = MultiLora(self.model, options.max_loaded, max_rank=options.max_adapter_rank)
        self._cache = AdapterCache(
            max_loaded=options.max_loaded,
            max_cpu=options.max_cpu_adapters,
            max_cpu_bytes=options.max_cpu_adapter_bytes,
            dtype=dtype,
            parse=lora.parse,
            attach=lora.attach,
        )
        self._scheduler = Scheduler(
            runner=Runner(self.model, lora, pad_id=self.tokenizer.pad_token_id, device=device),
            output=OutputStage(self._eos_ids()),
            cache=self._cache,
            max_batch_size=options.max_batch_size,
            max_wait_ms=options.max_wait_ms,
            max_queue=options.max_queue,
            threads=options.torch_threads,
        )
        self._scheduler.start()

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos])
        ids.add(self.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    async def shutdown(self) -> None:
        if self._grammars is not None:
            self._grammars.close()
        if self._scheduler is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._scheduler.stop)

    # ---- requests -------------------------------------------------------------------------
    async def prepare(self, request: GenerationRequest) -> SequenceGrammar | None:
        """The matcher of ``request``'s output constraint (None without one), compiled in a
        worker thread or taken from the cache; ``RequestError`` for a bad or too slow spec.
        Awaited before ``submit``, so the model thread never compiles."""
        if request.structured is None:
            return None
        compiled = await self._grammars.get(request.structured)
        return self._grammars.matcher(compiled, request.structured.kind)

    def submit(
        self,
        request: GenerationRequest,
        sink: Sink,
        reply_to: Any,
        grammar: SequenceGrammar | None = None,
    ) -> Sequence:
        """Queue ``request``; its chunks go to ``sink`` addressed to ``reply_to``. Raises
        ``RequestError`` (prompt too long, sampling options out of range) and
        ``QueueFullError`` at once. Runs on the event loop, which reads a missing adapter while
        the request already waits in the queue. A request with an output constraint brings
        its ``grammar`` (from ``prepare``)."""
        check_sampling(request.sampling)
        if request.structured is not None and grammar is None:
            raise RequestError("An output constraint must be compiled (prepare) before submit.")
        ids = self.frontend.encode(request)
        cpu = reading = None
        if request.adapter is not None:
            cpu = self._cache.peek(request.adapter)
            if cpu is None:
                reading = asyncio.ensure_future(self._fetch(request.adapter))
            else:
                self._remember(request.adapter)
        seq = Sequence(
            request=request,
            prompt_ids=ids,
            adapter=cpu,
            max_new=min(request.sampling.max_tokens, self.capabilities.max_model_len - len(ids)),
            text=TextState(self.tokenizer, stop=request.sampling.stop),
            sink=sink,
            reply_to=reply_to,
            loading=reading is not None,
            grammar=grammar,
        )
        if reading is not None:
            # Even if the queue refuses ``seq`` below, the read goes on: its adapter is cached
            # for the next request, and the callback collects its outcome.
            reading.add_done_callback(lambda task: self._read_done(seq, task))
        try:
            self._scheduler.submit(seq)
        except BaseException:
            seq.cancelled = True
            raise
        return seq

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        if self._sink is None or self._sink.loop is not loop:
            self._sink = LoopSink(loop)
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        grammar = await self.prepare(request)
        seq = self.submit(request, self._sink, queue, grammar)
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
            self._scheduler.loaded(seq, None)
            return
        error = task.exception()
        if error is not None:
            if not seq.cancelled:
                seq.fail(error)
            self._scheduler.loaded(seq, None)
        else:
            self._scheduler.loaded(seq, task.result())

    async def _fetch(self, adapter: AdapterSpec) -> CpuAdapter:
        cpu = await self._cache.fetch(adapter)
        self._remember(adapter)
        return cpu

    def _remember(self, adapter: AdapterSpec) -> None:
        key = adapter_key(adapter)
        names = self._names.get(key, frozenset())
        if adapter.name not in names:
            self._names[key] = names | {adapter.name}

    # ---- admin and state ------------------------------------------------------------------
    async def load(self, adapter: AdapterSpec) -> None:
        """Read the adapter into memory and attach it to a slot now (admin preload)."""
        cpu = await self._fetch(adapter)
        slot = await self._scheduler.call(lambda: self._cache.try_attach(cpu))
        if slot is None:
            raise RequestError(
                f"Cannot attach {adapter.name!r} now: all {self.capabilities.max_loaded} slots "
                "serve running requests. Retry shortly or raise --max-loaded."
            )

    async def unload(self, name: str) -> None:
        keys = [key for key, names in self._names.items() if name in names]
        if not keys:
            raise AdapterNotFoundError(f"Adapter {name!r} is not loaded: nothing to unload.")
        for key in keys:
            await self._scheduler.call(lambda key=key: self._cache.forget(key))
            self._names.pop(key, None)

    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def health(self) -> str | None:
        return None

    def loaded_adapters(self) -> list[str]:
        if self._cache is None:
            return []
        names = self._names.copy()
        return sorted(
            n for spec in self._cache.attached() for n in names.get(adapter_key(spec), ())
        )

    def stats(self) -> dict[str, float]:
        """Gauges and counters for /metrics (any thread)."""
        out: dict[str, float] = {}
        if self._scheduler is not None:
            out["queue_depth"] = self._scheduler.queue_depth()
            out["running"] = self._scheduler.running()
            out.update({f"batch_{k}": v for k, v in self._scheduler.stats.items()})
        if self._grammars is not None:
            out.update({f"grammar_{k}": v for k, v in self._grammars.stats.items()})
        if self._cache is not None:
            out.update({f"adapter_{k}": v for k, v in self._cache.stats.items()})
            out["adapters_attached"] = len(self._cache.attached())
            out["adapters_in_cpu"] = len(self._cache.in_memory())
            out["adapters_cpu_bytes"] = self._cache.cpu_bytes()
        return out
