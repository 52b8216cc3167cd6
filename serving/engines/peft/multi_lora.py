"""Batched multi-LoRA: every row of a batch through its own adapter, two matmuls per layer.

PEFT's mixed-batch path (``adapter_names``) loops over the adapters in the batch inside every
LoRA layer: with 16 distinct adapters, 16 small matmul pairs per layer, and the bench measured
0.44x the throughput of a one-adapter batch. Here each wrapped ``nn.Linear`` holds all slots'
weights stacked (``A: [slots+1, r, in]``, ``B.T: [slots+1, r, out]``, slot 0 all zeros for
the base) and runs one matmul pair for the whole batch, whatever the adapter mix (see
``MultiLoraLinear``; the idea of Punica/S-LoRA). Ranks are zero-padded to the largest attached,
which ``max_rank`` bounds.

Standard PEFT LoRA on linear layers is supported (ranks up to ``max_rank``,
``rank_pattern``/``alpha_pattern``, rsLoRA); DoRA, LoRA on embeddings, trained biases and
``modules_to_save`` are refused with an ``IncompatibleAdapterError`` listing what the adapter
uses (``adapter_check.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from loradock.serving.engines.peft.adapter_check import check_adapter
from loradock.serving.engines.peft.limits import MAX_LORA_RANK


@dataclass
class _Rows:
    """Which slot each row of the current batch uses (set by the runner before a forward), and
    what the layers derive from it: built on first use in a step, shared by every layer."""

    slots: list[int] = field(default_factory=list)  # [batch] slot index, 0 = base
    single: int | None = None  # every row uses this slot (no gather needed)
    n_slots: int = 0
    device: Any = "cpu"
    fused: Any = None  # the fused CPU kernel (serving/engines/peft/lora_kernel.py) when it applies
    _step: dict[Any, Any] = field(default_factory=dict)  # cleared by MultiLora.set_rows

    def _derived(self, key: Any, build: Any) -> Any:
        if key not in self._step:
            self._step[key] = build()
        return self._step[key]

    @property
    def rows(self) -> torch.Tensor:
        """[batch] slot index on the model's device (the matmul paths)."""
        return self._derived(
            "rows", lambda: torch.tensor(self.slots, dtype=torch.long, device=self.device)
        )

    def token_rows(self, tokens: int) -> Any:
        """Each token's slot for the fused kernel (a row's slot repeated ``tokens`` times)."""
        import numpy as np

        return self._derived(
            ("tokens", tokens), lambda: np.repeat(np.asarray(self.slots, dtype=np.int64), tokens)
        )

    def off_block(self, rank: int) -> torch.Tensor:
        """[batch, 1, (slots+1)*rank]: True outside each row's own slot's block (the scales
        live in ``Bt``). The dense path zeroes those positions rather than multiplying them by
        0, so an overflow (inf) in another slot's block never becomes NaN in this row."""

        def build() -> torch.Tensor:
            hot = torch.nn.functional.one_hot(self.rows, self.n_slots + 1) == 0
            return hot.repeat_interleave(rank, dim=-1).unsqueeze(1)

        return self._derived(("off_block", rank), build)


class MultiLoraLinear(nn.Module):
    """``base(x)`` plus, for every row, its own slot's ``scale * x @ A.T @ B.T``.

    ``Bt`` holds ``scale * B.T`` (the scale folded in when a slot is filled: one multiply
    less per layer and step). Two ways to batch: with few slots, one dense matmul against
    every slot's A at once, a mask keeping only each row's block, and one matmul against
    every slot's B (no weight copies); with many slots, or many tokens a row (a prefill, where
    computing every slot's A for every token costs more than gathering), gather each row's A
    and B and run batched matmuls.
    """

    def __init__(self, base: nn.Linear, n_slots: int, rank: int, ctx: _Rows):
        super().__init__()
        self.base = base
        self.ctx = ctx
        w = base.weight
        # The fused kernel works in float32 whatever the model's dtype (numba has no bfloat16):
        # its stacks are float32 then, so a bf16 model's LoRA sums are not rounded twice.
        dtype = torch.float32 if ctx.fused is not None else w.dtype
        self.A = torch.zeros(n_slots + 1, rank, base.in_features, dtype=dtype, device=w.device)
        self.Bt = torch.zeros(n_slots + 1, rank, base.out_features, dtype=dtype, device=w.device)
        self._refresh()

    def _refresh(self) -> None:
        """Flat views of the dense path (and numpy views for the fused kernel); called after
        any change of shape. Slots are filled in place, so the views stay current."""
        slots, rank, _ = self.A.shape
        self.A_flat_t = self.A.view(slots * rank, -1).transpose(0, 1)
        self.Bt_flat = self.Bt.view(slots * rank, -1)
        self.dense = slots * rank <= max(self.base.in_features, self.base.out_features)
        fused = self.ctx.fused is not None  # then the stacks are float32 on the CPU
        self.A_np = self.A.numpy() if fused else None
        self.Bt_np = self.Bt.numpy() if fused else None

    def grow_rank(self, rank: int) -> None:
        if rank <= self.A.shape[1]:
            return
        pad = rank - self.A.shape[1]
        self.A = torch.nn.functional.pad(self.A, (0, 0, 0, pad))
        self.Bt = torch.nn.functional.pad(self.Bt, (0, 0, 0, pad))
        self._refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        ctx = self.ctx
        if ctx.single == 0:
            return y
        if self.A_np is not None:  # the fused kernel
            # One pass over every token, each through its row's own slot (or the single one).
            flat = x.reshape(-1, x.shape[-1])
            rows = ctx.token_rows(x.shape[-2])
            if y.dtype == torch.float32 and y.is_contiguous():
                ctx.fused(
                    flat.numpy(), self.A_np, self.Bt_np, rows, y.view(-1, y.shape[-1]).numpy()
                )
                return y
            # bf16/fp16 model: the kernel sums in float32 into its own buffer (a few KB a step).
            delta = torch.zeros(flat.shape[0], y.shape[-1], dtype=torch.float32)
            ctx.fused(flat.float().numpy(), self.A_np, self.Bt_np, rows, delta.numpy())
            return y.add_(delta.view(y.shape))
        if ctx.single is not None:
            s = ctx.single
            return y.add_((x @ self.A[s].transpose(0, 1)) @ self.Bt[s])
        if self.dense and x.shape[-2] == 1:  # decode; a prefill's many tokens gather instead
            h = (x @ self.A_flat_t).masked_fill_(ctx.off_block(self.A.shape[1]), 0)
            return y.add_(h @ self.Bt_flat)
        rows = ctx.rows
        h = torch.bmm(x, self.A[rows].transpose(1, 2))
        return y.add_(torch.bmm(h, self.Bt[rows]))


class MultiLora:
    """Wraps a model's linear layers on demand; slots are filled by copying weights in."""

    def __init__(
        self,
        model: nn.Module,
        n_slots: int,
        *,
        fused: bool = True,
        max_rank: int = MAX_LORA_RANK,
    ):
        self.model = model
        self.n_slots = n_slots
        self.max_rank = max_rank  # parse refuses more: slots are as wide as the widest rank
        self.ctx = _Rows(n_slots=n_slots)
        self.layers: dict[str, MultiLoraLinear] = {}
        self.rank = 1
        weight = next(model.parameters(), None)
        on_cpu = weight is not None and weight.device.type == "cpu" and weight.is_floating_point()
        if fused and on_cpu:
            from loradock.serving.engines.peft.lora_kernel import kernel

            self.ctx.fused = kernel()

    @property
    def fused(self) -> bool:
        """Whether LoRA runs in the fused CPU kernel (any float dtype on a CPU, numba present;
        it sums in float32)."""
        return self.ctx.fused is not None

    def set_rows(self, slots: list[int]) -> None:
        ctx = self.ctx
        ctx.slots = slots
        ctx._step.clear()
        first = slots[0]
        ctx.single = first if all(s == first for s in slots) else None
        if self.layers:
            ctx.device = next(iter(self.layers.values())).A.device

    def parse(self, name: str, config: Any, state_dict: dict[str, torch.Tensor]):
        """``{module path: (A, B, scale)}`` or an error listing what cannot be served: the
        one check of an adapter against this model (``adapter_check.py``; ``attach`` trusts
        its result)."""
        return check_adapter(
            name, config, state_dict, module_of=self._base_module, max_rank=self.max_rank
        )

    def _base_module(self, path: str) -> nn.Module | None:
        try:
            target = self.model.get_submodule(path)
        except AttributeError:
            return None
        return target.base if isinstance(target, MultiLoraLinear) else target

    def attach(self, slot: int, weights: dict[str, tuple[torch.Tensor, torch.Tensor, float]]):
        """Copy ``weights`` (what :meth:`parse` returned: checked already) into ``slot``."""
        for module in weights:
            if module not in self.layers:
                self._wrap(module)
        needed = max(a.shape[0] for a, _, _ in weights.values())
        if needed > self.rank:
            self.rank = needed
            for layer in self.layers.values():
                layer.grow_rank(needed)
        self.detach(slot)
        for module, (a, b, scale) in weights.items():
            layer = self.layers[module]
            r = a.shape[0]
            layer.A[slot, :r].copy_(a)
            layer.Bt[slot, :r].copy_(b.transpose(0, 1) * scale)

    def detach(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.A[slot].zero_()
            layer.Bt[slot].zero_()

    def _wrap(self, module: str) -> None:
        parent_name, _, child = module.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        wrapped = MultiLoraLinear(getattr(parent, child), self.n_slots, self.rank, self.ctx)
        setattr(parent, child, wrapped)
        self.layers[module] = wrapped
