"""Structured outputs on the PEFT engine: grammars compiled by xgrammar, one matcher a sequence.

A request's ``StructuredOutput`` (a JSON schema, a regex or a list of choices) is compiled into
an xgrammar ``CompiledGrammar`` once and kept in a bounded LRU keyed by the spec's hash, so the
next request with the same schema starts at once. Compiling runs in this module's own worker
thread, awaited before the request joins the queue: the model thread never compiles, and a
schema that takes longer than ``compile_timeout_s`` is refused (400) and remembered as refused,
so sending it again costs nothing. Sizes are bounded before anything compiles (the HTTP layer
checks them: ``http/structured.py``).

On the model thread each constrained row fills its row of a token bitmask from its matcher;
the mask is applied to that row's logits before sampling, rows without a grammar untouched;
the chosen token is then fed to the matcher. JSON is generated compact (no free whitespace,
so a model cannot pad forever), and tokens holding a raw control character are masked out of
JSON rows: xgrammar's bounded strings (``maxLength``) let them through, and JSON forbids them
unescaped.

xgrammar was chosen by measurement (docs/serving.md, "Structured outputs and tools").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

import torch

from loradock.errors import GenerationError, QueueFullError, RequestError
from loradock.serving.engines.base import StructuredOutput

MAX_GRAMMARS = 256  # compiled grammars kept (a JSON schema's is tens of KiB)
MAX_REFUSED = 1024  # specs remembered as refused (too slow or invalid)
COMPILE_TIMEOUT_S = 10.0
MAX_PENDING = 32  # distinct specs waiting to compile; more is a 429


def spec_key(spec: StructuredOutput) -> str:
    """The cache key: a hash of the spec's kind and text."""
    text = json.dumps([spec.kind, spec.value, list(spec.choices)], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def choice_grammar(choices: tuple[str, ...]) -> str:
    """An EBNF grammar matching exactly one of ``choices`` (JSON string literals are EBNF's)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


class GrammarCache:
    """Compiles specs for one tokenizer in a worker thread; keeps the last ``max_entries``."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int,
        stop_ids: set[int],
        max_entries: int = MAX_GRAMMARS,
        compile_timeout_s: float = COMPILE_TIMEOUT_S,
    ):
        self.max_entries = max_entries
        self.compile_timeout_s = compile_timeout_s
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._refused: OrderedDict[str, str] = OrderedDict()
        self._compiling: dict[str, concurrent.futures.Future] = {}
        self._started: dict[str, float] = {}  # when each compile in progress began
        self._lock = threading.Lock()
        # One thread: a slow schema delays other compiles but never the model or the HTTP
        # loop, and at most one CPU goes to compiling.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grammar")
        # Reading the vocabulary takes ~1 s on a 49k vocab: started now, off the request path.
        self._compiler = self._pool.submit(_make_compiler, tokenizer, vocab_size, stop_ids)
        self.stats = {"compiled": 0, "hits": 0, "refused": 0}

    async def get(self, spec: StructuredOutput) -> Any:
        """``spec``'s compiled grammar; ``RequestError`` when it is invalid or too slow."""
        key = spec_key(spec)
        future = self._lookup(key, spec)
        if not isinstance(future, concurrent.futures.Future):
            return future
        waiting = asyncio.wrap_future(future)
        wait = self.compile_timeout_s  # first in the queue, then from the compile's start
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(waiting), wait)
            except TimeoutError:
                started = self._started.get(key)
                if started is None:
                    raise QueueFullError(
                        "Output constraints are queued to compile behind slow ones: retry shortly."
                    ) from None
                wait = started + self.compile_timeout_s - time.monotonic()
                if wait <= 0:
                    break
        reason = (
            f"The {spec.kind} constraint did not compile within {self.compile_timeout_s:g} s: "
            "simplify the schema (fewer properties, alternatives or nested levels)."
        )
        self._refuse(key, reason)
        raise RequestError(reason)

    def _lookup(self, key: str, spec: StructuredOutput) -> Any:
        """The compiled grammar, or the future of its compilation (started here if needed)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.stats["hits"] += 1
                return self._entries[key]
            if key in self._refused:
                raise RequestError(self._refused[key])
            future = self._compiling.get(key)
            if future is None:
                if len(self._compiling) >= MAX_PENDING:
                    raise QueueFullError(
                        f"{MAX_PENDING} output constraints are waiting to compile: retry shortly."
                    )
                future = self._pool.submit(self._compile, key, spec)
                self._compiling[key] = future
            return future

    def _compile(self, key: str, spec: StructuredOutput) -> Any:
        tools = self._compiler.result()  # the vocabulary is read before the clock starts
        self._started[key] = time.monotonic()
        try:
            compiled = _compile(tools, spec)
        except RequestError as exc:
            self._refuse(key, str(exc))
            raise
        finally:
            with self._lock:
                self._compiling.pop(key, None)
                self._started.pop(key, None)
        with self._lock:
            self.stats["compiled"] += 1
            if key in self._refused:  # too slow: it stays refused
                return compiled
            self._entries[key] = compiled
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return compiled

    def _refuse(self, key: str, reason: str) -> None:
        with self._lock:
            self._refused[key] = reason
            self.stats["refused"] += 1
            while len(self._refused) > MAX_REFUSED:
                self._refused.popitem(last=False)

    def matcher(self, compiled: Any, kind: str) -> SequenceGrammar:
        return SequenceGrammar(compiled, json=kind == "json", no_control=self._no_control())

    def _no_control(self) -> torch.Tensor:
        return self._compiler.result()[1]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _make_compiler(tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> tuple[Any, Any]:
    """xgrammar's compiler for ``tokenizer`` and the bitmask row of tokens without a raw
    control character (byte < 0x20)."""
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
    )
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    for token_id, piece in enumerate(info.decoded_vocab[:vocab_size]):
        if token_id not in stop_ids and any(b < 0x20 for b in piece):
            allowed[token_id] = False
    return compiler, pack_bits(allowed)


def pack_bits(allowed: torch.Tensor) -> torch.Tensor:
    """A bool vector as xgrammar's bitmask row: bit ``j`` of int32 word ``w`` is token
    ``32 * w + j``."""
    words = (allowed.numel() + 31) // 32
    padded = torch.zeros(words * 32, dtype=torch.int64)
    padded[: allowed.numel()] = allowed.to(torch.int64)
    shifts = torch.arange(32, dtype=torch.int64)
    packed = (padded.view(words, 32) << shifts).sum(dim=1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)  # two's complement


def _compile(compiler_and_mask: tuple[Any, Any], spec: StructuredOutput) -> Any:
    compiler = compiler_and_mask[0]
    try:
        if spec.kind == "json":
            # Compact separators: no free whitespace for a model to repeat until max_tokens.
            return compiler.compile_json_schema(
                spec.value or '{"type": "object"}', any_whitespace=False, strict_mode=True
            )
        if spec.kind == "regex":
            return compiler.compile_regex(spec.value)
        return compiler.compile_grammar(choice_grammar(spec.choices))
    except RuntimeError as exc:  # xgrammar reports every spec error as a RuntimeError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        detail = detail.split(": ", 1)[-1] if ".cc:" in detail else detail
        raise RequestError(f"The {spec.kind} constraint cannot be compiled: {detail}") from None


class SequenceGrammar:
    """One sequence's matcher: fills its mask row, takes each chosen token."""

    def __init__(self, compiled: Any, *, json: bool, no_control: torch.Tensor):
        import xgrammar as xgr

        self.matcher = xgr.GrammarMatcher(compiled)
        self.no_control = no_control if json else None

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, row)
        if self.no_control is not None:
            bitmask[row] &= self.no_control

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise GenerationError(f"Token {token} broke the request's output constraint.")


def constrain(active: list[Any], rows: list[int], logits: torch.Tensor, greedy: list[int]) -> None:
    """Mask, in place, the rows of ``logits`` whose sequence has a grammar (``logits[i]`` is
    ``active[rows[i]]``'s) and set their ``greedy`` choice again; other rows are untouched."""
    grammars = [(i, active[row].grammar) for i, row in enumerate(rows) if active[row].grammar]
    if not grammars:
        return
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[-1])
    for i, grammar in grammars:
        grammar.fill(bitmask, i)
    indices = [i for i, _ in grammars]
    xgr.apply_token_bitmask_inplace(logits, bitmask, indices=indices)
    for i, token in zip(indices, logits[indices].argmax(dim=-1).tolist(), strict=True):
        greedy[i] = token
