"""Several generations streamed at once, merged into one sequence of snapshots for the page.

Each model streams in its own task; whenever any of them produces text (or fails, or ends)
the caller gets the current state of all panels, so the outputs grow side by side. One
model failing never stops the others: its panel carries the readable error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

try:
    from .client import EndpointError, LoradockClient
    from .records import GenerationStats
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from client import EndpointError, LoradockClient  # type: ignore[no-redef]
    from records import GenerationStats  # type: ignore[no-redef]


@dataclass
class Panel:
    """One model's output so far."""

    model: str
    text: str = ""
    error: str | None = None
    done: bool = False
    stats: GenerationStats = field(default_factory=lambda: GenerationStats(model=""))

    def __post_init__(self) -> None:
        self.stats.model = self.model

    def footer(self) -> str:
        if self.error:
            return f"⚠️ {self.error}"
        state = "" if self.done else "streaming… · "
        return state + self.stats.summary()


async def stream_side_by_side(
    client: LoradockClient,
    models: Sequence[str],
    prompt: str,
    *,
    max_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
) -> AsyncIterator[list[Panel]]:
    """Yield the list of panels after each burst of progress, ending when all are done.

    Greedy by default (Compare); the arena samples with ``temperature`` and a ``seed``.
    """
    panels = [Panel(model=m) for m in models]
    changed: asyncio.Queue[int] = asyncio.Queue()

    async def run(i: int) -> None:
        panel = panels[i]
        try:
            async for delta in client.stream_chat(
                panel.model,
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                stats=panel.stats,
            ):
                panel.text += delta
                changed.put_nowait(i)
        except EndpointError as exc:
            panel.error = str(exc)
        except Exception as exc:  # the page shows a message, never a traceback
            panel.error = f"Unexpected failure while generating: {type(exc).__name__}: {exc}"
        finally:
            panel.done = True
            changed.put_nowait(i)

    tasks = [asyncio.create_task(run(i)) for i in range(len(panels))]
    try:
        while True:
            # Decide "finished" before yielding: the tasks keep running while the caller
            # handles a snapshot, and the final state must still be yielded once.
            finished = all(p.done for p in panels)
            yield panels
            if finished:
                return
            await changed.get()
            while not changed.empty():  # coalesce bursts into one page update
                changed.get_nowait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
