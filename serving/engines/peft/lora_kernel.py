"""A fused multi-LoRA kernel for the CPU (the idea of Punica's SGMV), compiled with numba.

For every token row ``i`` of a batch: ``y[i] += (x[i] @ A[s].T) @ Bt[s]`` with ``s = rows[i]``
(slot 0, the base, adds nothing). It reads each row's own slot's weights in place, so its work
is that of one adapter whatever the mix of adapters in the batch.

Why: PyTorch offers no segmented matmul on the CPU (``torch._grouped_mm``'s CPU path measured
slower than the alternatives). The two eager ways to batch mixed adapters each pay for the mix:
one dense matmul against every slot's A and B does ``slots`` times the arithmetic, and gathering
each row's A and B copies them every layer. Measured for one LoRA module of the bench model
(hidden 256, rank 8, 16 decode rows, one thread): dense 33 us, gather + bmm 29 us, one adapter
through two plain matmuls 10 us, this kernel 6.6 us (for 16 distinct adapters or one).

It serves prefills too (every token of a row through the row's slot): 32 prompts of 40 tokens
over 8 adapters, 0.19 ms a module against 1.2 ms gathered and 0.26 ms for one adapter's two
matmuls. It computes in float32 (numba has no bfloat16): for a bf16/fp16 model the caller keeps
float32 stacks, passes a float32 copy of the input and adds the result; GPUs and a missing
numba keep the eager paths.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_KERNEL: Any = None
_UNAVAILABLE: str | None = None


def _build() -> Any:
    import numba
    import numpy as np

    # nogil: the engine thread may share the process with I/O threads. fastmath lets LLVM
    # vectorise the two inner loops (the sums' order may change: float32 rounding only).
    @numba.njit(cache=True, fastmath=True, nogil=True, boundscheck=False)
    def sgmv(x, a, bt, rows, y):  # pragma: no cover - compiled
        n, d = x.shape
        r = a.shape[1]
        o = bt.shape[2]
        h = np.empty(r, dtype=x.dtype)
        for i in range(n):
            s = rows[i]
            if s == 0:
                continue
            for k in range(r):
                acc = np.float32(0.0)
                for j in range(d):
                    acc += x[i, j] * a[s, k, j]
                h[k] = acc
            for k in range(r):
                hk = h[k]
                for j in range(o):
                    y[i, j] += hk * bt[s, k, j]

    return sgmv


def kernel() -> Any | None:
    """The compiled kernel (compiled and warmed up on first call), or None without numba."""
    global _KERNEL, _UNAVAILABLE
    if _KERNEL is not None or _UNAVAILABLE is not None:
        return _KERNEL
    try:
        import numpy as np

        fn = _build()
        # Compile now (or load numba's on-disk cache), not inside the first request.
        x = np.ones((2, 4), dtype=np.float32)
        y = np.zeros((2, 3), dtype=np.float32)
        a = np.ones((2, 1, 4), dtype=np.float32)
        bt = np.ones((2, 1, 3), dtype=np.float32)
        fn(x, a, bt, np.array([0, 1], dtype=np.int64), y)
        if not (y[0] == 0).all() or not (y[1] == 4).all():
            raise RuntimeError(f"kernel self-check gave {y.tolist()}")
        _KERNEL = fn
    except Exception as exc:  # numba missing or broken: the eager paths still serve
        _UNAVAILABLE = f"{type(exc).__name__}: {exc}"
        log.warning("fused multi-LoRA kernel unavailable (%s); using matmuls", _UNAVAILABLE)
    return _KERNEL
