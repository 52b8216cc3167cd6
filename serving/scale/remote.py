"""``RemoteEngine``: the ``Engine`` the ingress's app talks to, backed by ``EngineReplica``s.

The HTTP layer runs unchanged over it: it tokenises with this engine's ``frontend`` (the base's
tokenizer, loaded in the ingress), and each request goes to a replica through a Ray Serve
handle, streamed, with the adapter's ``org/name@sha`` as the multiplexed model id
(``multiplexed=False`` sends it wherever Ray's default routing does: the comparison
``bench/replicas.py`` makes).

A replica that dies before a request's first chunk is retried on another (Ray replaces the
dead one); once chunks have gone out, the request fails with a 503 rather than resending
text. Errors raised in a replica (``loradock.errors``) come back as themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray.exceptions import RayError, RayTaskError

from loradock.errors import EngineError, GenerationError, LoradockError, RequestError
from loradock.modeling import load_tokenizer
from loradock.serving.engines.base import (
    AdapterSpec,
    EngineCapabilities,
    GenerationChunk,
    GenerationRequest,
)
from loradock.serving.engines.frontend import PromptFrontend
from loradock.serving.engines.peft.limits import capabilities
from loradock.serving.scale.replica import adapter_id

RETRIES = 2  # new tries of a request whose replica died before its first chunk
RETRY_WAIT_S = 0.5  # time for Ray to mark the dead replica and route around it


def expected_capabilities(config: Any, base_path: str | Path, registry: Any) -> EngineCapabilities:
    """What the replicas' engine will report, known before one has started: the app's
    resolver refuses adapters by them (``max_lora_rank``) from the start. vLLM's come from its
    engine object, built as a replica builds it (its tokenizer and the registry's ranks:
    vLLM itself starts only in ``start``)."""
    if config.engine == "vllm":
        from loradock.serving.engines.vllm.engine import create_engine

        return create_engine(config, base_path, registry=registry).capabilities
    return capabilities(config.peft)


class RemoteEngine:
    def __init__(
        self,
        handle: Any,
        config: Any,
        base_path: str | Path,
        *,
        registry: Any = None,
        multiplexed: bool = True,
    ) -> None:
        self.handle = handle
        self.base_path = Path(base_path)
        self.base_name = config.base_model_name
        self.capabilities = expected_capabilities(config, base_path, registry)
        self.multiplexed = multiplexed
        self.frontend: PromptFrontend | None = None
        self.replicas: dict[str, dict[str, Any]] = {}  # replica id -> its last report

    async def start(self) -> None:
        info = await self.handle.describe.remote()
        self.capabilities = info["capabilities"]
        tokenizer = await asyncio.to_thread(load_tokenizer, self.base_path)
        self.frontend = PromptFrontend(tokenizer, info["max_model_len"])

    async def shutdown(self) -> None:
        """Replicas belong to Ray Serve: they stop with the application."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        model_id = adapter_id(request.adapter) if request.adapter else ""
        handle = self.handle.options(
            stream=True, multiplexed_model_id=model_id if self.multiplexed else ""
        )
        for attempt in range(RETRIES + 1):
            stream, sent = handle.generate.remote(request), False
            try:
                async for replica, report, chunk in stream:
                    if report is not None:
                        self.replicas[replica] = report
                    sent = True
                    yield chunk
                return
            except RayTaskError as exc:
                raise _cause(exc) from None
            except RayError as exc:
                if sent or attempt == RETRIES:
                    raise EngineError(f"The replica serving this request stopped: {exc}") from None
                await asyncio.sleep(RETRY_WAIT_S)
            finally:
                stream.cancel()  # a no-op once finished; else the replica stops generating

    async def load(self, adapter: AdapterSpec) -> None:
        handle = self.handle.options(multiplexed_model_id=adapter_id(adapter))
        try:
            replica, report = await handle.load.remote(adapter)
        except RayTaskError as exc:
            raise _cause(exc) from None
        self.replicas[replica] = report

    async def unload(self, name: str) -> None:
        raise RequestError(
            f"Cannot unload {name!r}: with replicas, each replica keeps the adapters it serves "
            "in its own LRU of adapter slots, and Ray routes by what each holds."
        )

    def loaded_adapters(self) -> list[str]:
        return sorted({n for report in self.replicas.values() for n in report["loaded"]})

    def count_tokens(self, text: str) -> int:
        return self.frontend.count_tokens(text)

    def stats(self) -> dict[str, float]:
        """Every replica's engine stats summed (counters of replaced replicas included)."""
        total: dict[str, float] = {}
        for report in self.replicas.values():
            for key, value in report["stats"].items():
                total[key] = total.get(key, 0.0) + value
        return total

    def health(self) -> str | None:
        return None  # Ray Serve health-checks the replicas and replaces a failed one


def _cause(exc: RayTaskError) -> Exception:
    """A replica's known error as itself (its message, its status); anything else a 500."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LoradockError):
        return cause
    return GenerationError(f"A replica failed: {type(cause or exc).__name__}")
