"""trl's fused LM head with CPU-sized tiles: same log-probabilities and gradients, trl restored."""

from __future__ import annotations

import pytest
import torch
import trl.kernels.chunked_logprob as kernel
import trl.trainer.utils as trl_utils
from trl.kernels import ChunkedLogProbFunction

from loradock.training.lm_head_tiles import CPU_TOKEN_TILE, CPU_VOCAB_TILE, cpu_lm_head_tiles

TRL_OUTPUTS = ("log_probs", "entropy", "is_top1")  # what SFTTrainer asks its fused head for


def _tiles() -> tuple[int, int]:
    return kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE


def _fused_head(hidden, weight, targets):
    """Log-probs, entropy and top-1 through trl's function with whatever tiles are set now (the
    vocabulary tile is passed by trl's fused forward from its module global, as here)."""
    return ChunkedLogProbFunction.apply(
        hidden, weight, None, targets, 1.0, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
        TRL_OUTPUTS,
    )  # fmt: skip


def test_cpu_tiles_set_inside_and_restored_after():
    before = _tiles()
    assert before != (CPU_TOKEN_TILE, CPU_VOCAB_TILE)  # trl's own (GPU-sized) tiles
    with cpu_lm_head_tiles("cpu") as applied:
        assert applied is True
        assert _tiles() == (CPU_TOKEN_TILE, CPU_VOCAB_TILE)
    assert _tiles() == before


def test_restored_when_training_fails():
    before = _tiles()
    with pytest.raises(RuntimeError, match="boom"), cpu_lm_head_tiles("cpu"):
        raise RuntimeError("boom")
    assert _tiles() == before


@pytest.mark.parametrize("device", ["cuda", "xpu", "mps"])
def test_other_devices_keep_trl_tiles(device):
    """Triton devices run trl's kernels, sized for them: nothing to change."""
    before = _tiles()
    with cpu_lm_head_tiles(device) as applied:
        assert applied is False
        assert _tiles() == before


@pytest.mark.parametrize(
    "module, name",
    [
        ("trl.kernels.chunked_logprob", "TOKEN_CHUNK_SIZE"),
        ("trl.trainer.utils", "_CHUNKED_LOGPROB_CHUNK_SIZE"),
    ],
)
def test_a_trl_without_the_globals_is_left_alone(monkeypatch, caplog, module, name):
    """A later trl that renames its tile sizes trains as trl does, with a warning naming them."""
    import importlib

    monkeypatch.delattr(importlib.import_module(module), name)
    others = {
        (m, n): getattr(importlib.import_module(m), n)
        for m, n in (("trl.kernels.chunked_logprob", "TOKEN_CHUNK_SIZE"),
                     ("trl.trainer.utils", "_CHUNKED_LOGPROB_CHUNK_SIZE"))
        if n != name
    }  # fmt: skip
    with caplog.at_level("WARNING"), cpu_lm_head_tiles("cpu") as applied:
        assert applied is False
        assert not hasattr(importlib.import_module(module), name)
        for (m, n), value in others.items():
            assert getattr(importlib.import_module(m), n) == value
    assert f"{module}.{name}" in caplog.text


@pytest.mark.parametrize("tokens, vocab", [(CPU_TOKEN_TILE, CPU_VOCAB_TILE), (16, 96)])
def test_tiled_head_matches_full_logits(tokens, vocab):
    """Small tiles compute what the full logits do: log-probs, entropy, top-1 and gradients,
    with several tiles along both tokens and vocabulary (the second case)."""
    torch.manual_seed(0)
    n, width, vocab_size = 300, 24, 1000
    hidden = torch.randn(n, width, requires_grad=True)
    weight = torch.randn(vocab_size, width, requires_grad=True)
    targets = torch.randint(0, vocab_size, (n,))
    grad_out = torch.randn(n)

    logits = hidden @ weight.t()
    log_softmax = logits.log_softmax(-1)
    want_lp = log_softmax.gather(-1, targets[:, None]).squeeze(-1)
    want_entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    want_top1 = logits.argmax(-1) == targets
    (want_lp * grad_out).sum().backward()
    want_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    with cpu_lm_head_tiles("cpu", tokens=tokens, vocab=vocab):
        log_probs, entropy, _, _, top1 = _fused_head(hidden, weight, targets)
        (log_probs * grad_out).sum().backward()
    torch.testing.assert_close(log_probs, want_lp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy, want_entropy, atol=1e-4, rtol=1e-4)
    assert torch.equal(top1, want_top1)
    torch.testing.assert_close(hidden.grad, want_grads[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(weight.grad, want_grads[1], atol=1e-4, rtol=1e-4)


def test_training_runs_with_the_cpu_tiles(make_job, tiny_registry_base, registry):
    """``train`` sets the tiles for its loop (seen from inside a step) and restores trl's."""
    from transformers import TrainerCallback

    from loradock.training.config import JobConfig
    from loradock.training.job import train
    from loradock.training.preflight import preflight
    from loradock.training.session import build_session

    seen: list[tuple[int, int]] = []

    class SeeTiles(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(_tiles())

    before = _tiles()
    job = JobConfig.from_dict(make_job(trainer={"max_steps": 2, "save_steps": 100}))
    session = build_session(preflight(job, registry=registry), progress=False)
    session.trainer.add_callback(SeeTiles())
    summary = train(session)
    assert summary["global_step"] == 2
    assert seen == [(CPU_TOKEN_TILE, CPU_VOCAB_TILE)] * 2
    assert _tiles() == before
