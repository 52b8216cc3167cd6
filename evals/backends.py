"""Where a model runs during an eval: in this process (transformers + PEFT), behind a loradock
endpoint (OpenAI-compatible HTTP), or in vLLM. Each turns one target into an lm-eval ``LM``.

In-process, the base is loaded once and adapters are swapped on it (PEFT named adapters), as
the serving engine does; vLLM likewise keeps one engine and changes the ``LoRARequest``. This
file holds the interface they share; each backend has its own file: ``hf_backend.py``,
``endpoint_backend.py``, ``vllm_backend.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from loradock.evals.results import EvalTarget

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo


class Backend(Protocol):
    """What ``run.evaluate`` needs of a backend: one lm-eval ``LM`` per target."""

    name: str

    def check_tasks(self, specs: Sequence[TaskInfo]) -> None: ...

    def model_for(self, target: EvalTarget) -> AbstractContextManager[tuple[Any, bool]]:
        """Yield ``(lm, apply_chat_template)`` for ``target``."""
        ...

    def close(self) -> None: ...
