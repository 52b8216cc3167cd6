"""Held-out evaluation: reply-only logits give the same perplexity, and the reference as a draft
gives the same greedy replies as generating every row."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from loradock.training import heldout
from loradock.training.data import EvalExample
from loradock.training.heldout_draft import draft

OWN = "London 1843"  # the chain model's greedy reply (distinct tokens, one bigram each)


def _examples(references: list[str]) -> list[EvalExample]:
    # Prompts of different lengths, so batches are padded (right for scoring, left to generate).
    return [
        EvalExample([{"role": "user", "content": f"question {i} " + "why " * (i % 3)}], ref)
        for i, ref in enumerate(references)
    ]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from loradock.tiny import make_tiny_tokenizer

    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def chain_model(tiny_tokenizer):
    """A one-layer Llama whose greedy reply to any chat prompt is ``OWN`` then end of turn.

    Large embeddings keep each position's hidden state close to its token's embedding, and the
    LM head scores each next token of the chain along the previous token's embedding: a bigram
    model, with the (random, small) attention and MLP still mixing in the other positions.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer
    ids, start, _ = heldout._reply_ids(tok, _examples([OWN])[0].messages, OWN)
    chain = ids[start - 1 : ids.index(tok.eos_token_id, start) + 1]  # "\n" ... <|im_end|>
    assert len(set(chain)) == len(chain) > 2, chain
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(50)
        for prev, nxt in itertools.pairwise(chain):
            direction = model.model.embed_tokens.weight[prev]
            model.lm_head.weight[nxt] += 2 * direction / direction.norm()
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def _reference_scores(model, tokenizer, examples) -> tuple[float, list[list[int]]]:
    """Perplexity and greedy reply tokens from full logits, one row at a time."""
    nll, count, greedy = 0.0, 0, []
    for ex in examples:
        ids, start, _ = heldout._reply_ids(tokenizer, ex.messages, ex.reference)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, start - 1 : -1].float()
        nll += float(
            torch.nn.functional.cross_entropy(logits, torch.tensor(ids[start:]), reduction="sum")
        )
        count += len(ids) - start
        greedy.append(logits.argmax(-1).tolist())
    return math.exp(nll / count), greedy


@pytest.mark.parametrize("variant", ["base", "peft", "qlora"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_reply_only_logits_score_like_full_logits(
    tiny_base, tiny_adapter_factory, variant, batch_size
):
    from peft import PeftModel

    from loradock.modeling import load_base

    if variant == "qlora":
        pytest.importorskip("bitsandbytes")
    quantization = "nf4" if variant == "qlora" else None
    model, tokenizer = load_base(
        tiny_base, dtype="float32", device="cpu", quantization=quantization
    )
    if variant != "base":
        model = PeftModel.from_pretrained(model, tiny_adapter_factory())
    model.eval()
    examples = _examples(["Paris", "2024-03-03", OWN, '{"name": "Ada"}', "four"])
    expected_ppl, expected_greedy = _reference_scores(model, tokenizer, examples)

    scores = heldout.score_replies(model, tokenizer, examples, batch_size=batch_size)

    assert scores.perplexity == pytest.approx(expected_ppl, rel=1e-5)
    assert scores.greedy == expected_greedy
    assert [len(r) for r in scores.replies] == [len(g) for g in expected_greedy]


@pytest.mark.parametrize(
    ("reply", "stops", "max_new_tokens", "expected"),
    [
        ([5, 6, 2, 9], {2}, 10, [5, 6, 2]),  # through the end of turn, not the newline after it
        ([5, 6, 2, 9], {2}, 2, [5, 6]),  # the budget ends first
        ([5, 6, 2, 9], {2}, 3, [5, 6, 2]),
        ([5, 2, 9], {2, 5}, 10, [5]),  # several stop ids: the first one met
        ([5, 6, 9], {2}, 10, None),  # no stop token within the budget: generation goes on
        ([5, 6, 9], set(), 3, [5, 6, 9]),
        ([], {2}, 3, None),  # the template's ids do not continue the prompt
    ],
)
def test_draft_is_what_greedy_generation_would_emit(reply, stops, max_new_tokens, expected):
    assert draft(reply, frozenset(stops), max_new_tokens) == expected


@pytest.mark.parametrize(
    ("references", "max_new_tokens", "config", "generated"),
    [
        pytest.param([OWN], 20, {}, [], id="own-reply"),
        pytest.param([OWN, "Paris"], 20, {}, [1], id="first-token-differs"),
        pytest.param(["London 1999", OWN], 20, {}, [0], id="middle-differs"),
        pytest.param([OWN + " and more"], 20, {}, [0], id="model-ends-turn-first"),
        pytest.param(["London"], 20, {}, [0], id="reference-ends-turn-first"),
        pytest.param([OWN + " and more", "London 18"], 5, {}, [1], id="longer-than-budget"),
        pytest.param(
            [OWN, "Paris", OWN + "x", OWN, "London 1999", OWN], 20, {}, [1, 2, 4], id="mixed"
        ),
        pytest.param(
            [OWN, OWN], 20, {"repetition_penalty": 1.3}, [0, 1], id="processor-not-argmax"
        ),
    ],
)
def test_draft_replies_equal_generating_every_row(
    chain_model, tiny_tokenizer, monkeypatch, references, max_new_tokens, config, generated
):
    for name, value in config.items():
        monkeypatch.setattr(chain_model.generation_config, name, value)
    examples = _examples(references)
    kwargs = {"max_new_tokens": max_new_tokens, "batch_size": 2}
    expected = heldout.generate_replies(chain_model, tiny_tokenizer, examples, **kwargs)
    prompts: list[str] = []
    real = heldout.generate_replies

    def spy(model, tokenizer, rows, **kw):
        prompts.extend(ex.messages[-1]["content"] for ex in rows)
        return real(model, tokenizer, rows, **kw)

    monkeypatch.setattr(heldout, "generate_replies", spy)
    scores = heldout.score_replies(chain_model, tiny_tokenizer, examples, batch_size=2)
    replies = heldout.greedy_replies(chain_model, tiny_tokenizer, examples, scores, **kwargs)

    assert replies == expected
    assert prompts == [examples[i].messages[-1]["content"] for i in generated]
    # Every row's greedy reply is the chain model's own: rows differ only in their references.
    assert expected == [OWN] * len(references)


def test_evaluate_model_scores_the_draft_replies(chain_model, tiny_tokenizer):
    from loradock.training.tasks import TASKS

    examples = _examples([OWN, "Paris", OWN])
    result = heldout.evaluate_model(
        chain_model,
        tiny_tokenizer,
        examples,
        task=TASKS["dates"],
        max_new_tokens=20,
        keep_samples=2,
    )

    assert result.metrics["exact_match"] == pytest.approx(2 / 3)
    assert [s["reply"] for s in result.samples] == [OWN, OWN]
    assert result.perplexity == pytest.approx(
        _reference_scores(chain_model, tiny_tokenizer, examples)[0], rel=1e-5
    )
