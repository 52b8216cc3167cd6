"""Tiny random-weight models and adapters, built from a config with no download.

Tests, the reduced CI demo and benchmarks use these instead of a real checkpoint: a
Llama-architecture model of a few hundred thousand parameters, a byte-level BPE tokenizer
trained in milliseconds on a built-in corpus, and SmolLM2's ChatML chat template, so every
code path (chat templates, PEFT, trl, vLLM, lm-eval) sees a real Hugging Face model folder.
"""

from __future__ import annotations

from pathlib import Path

# SmolLM2-Instruct's template (ChatML): the tiny model speaks the same dialect as the real one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Convert the date 3 March 2024 to ISO format: 2024-03-03.",
    '{"name": "Ada Lovelace", "city": "London", "year": 1843}',
    "Question: what is two plus two? Answer: four.",
    "user assistant system: You are a helpful assistant.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?-_/\\'\"{}[]()<>@#$%&*+=",
]


def make_tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer (encodes any text) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_base(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 128,
    max_positions: int = 512,
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """Write a random-weight Llama model + tokenizer folder at ``path`` and return it.

    Two heads of 32 by default: vLLM's CPU attention needs a head size of at least 32, and
    the same tiny model then runs under every engine.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    path = Path(path)
    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_adapter(
    base_path: str | Path,
    out: str | Path,
    *,
    r: int = 4,
    lora_alpha: int = 8,
    target_modules: list[str] | str = ("q_proj", "v_proj"),
    seed: int = 1,
) -> Path:
    """Write a PEFT LoRA adapter for ``base_path`` whose weights are random and non-zero.

    ``init_lora_weights=False`` makes B non-zero, so each adapter changes the base's
    outputs and tests can tell adapters apart.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules)
        if not isinstance(target_modules, str)
        else target_modules,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    # PEFT records the absolute base path; a published adapter names its base by repo id
    # (the card's base_model), so callers replace this through the card builder.
    return out


def make_random_base(source: str | Path, path: str | Path, *, seed: int = 0) -> Path:
    """A random-weight model with ``source``'s architecture and tokenizer (its ``config.json``
    and tokenizer files; no weights are read), written at ``path``.

    Speed does not depend on the weights' values, so a benchmark can run a real model's shapes
    on a machine that holds only its config and tokenizer (a borrowed GPU machine, say).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, path = Path(source), Path(path)
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    for extra in ("generation_config.json",):  # eos ids the chat template stops on
        if (source / extra).is_file():
            (path / extra).write_bytes((source / extra).read_bytes())
    return path
