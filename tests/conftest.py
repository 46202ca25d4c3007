"""Shared fixtures: the real embedded model, and tiny random models of other architectures."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from explorer.core.models import Architecture, LoadedModel, load_model

TINY_ARCHS = ["llama", "qwen2", "mistral", "gemma2", "gpt2", "gpt_neox", "phi3"]


@pytest.fixture(scope="session")
def lm() -> LoadedModel:
    """The real default model (SmolLM2-135M-Instruct from the embedded GGUF)."""
    return load_model()


def tiny_config(arch: str, vocab: int):
    from transformers import (
        Gemma2Config,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
    )

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if arch == "gemma2":
        return Gemma2Config(**common, head_dim=16, sliding_window=64)
    if arch == "phi3":
        return Phi3Config(**{**common, "num_key_value_heads": 4}, pad_token_id=0)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=64, n_layer=3, n_head=4, n_positions=512, bos_token_id=1, eos_token_id=2)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                             num_attention_heads=4, max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    raise ValueError(arch)


@pytest.fixture(scope="session")
def tiny(lm):
    """Factory: a tiny randomly initialised model of ``arch`` using the real tokenizer."""
    from transformers import AutoModelForCausalLM

    cache: dict[str, LoadedModel] = {}

    def make(arch: str, chat: bool = True) -> LoadedModel:
        key = f"{arch}:{chat}"
        if key not in cache:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(arch, len(lm.tokenizer))).eval()
            model.requires_grad_(False)
            tok = lm.tokenizer if chat else plain_tokenizer(lm.tokenizer)
            cache[key] = LoadedModel(model=model, tokenizer=tok, arch=Architecture.find(model),
                                     model_id=f"tiny-{arch}", source="tiny")
        return cache[key]

    return make


def plain_tokenizer(tok):
    """The same tokenizer without a chat template (a base model's)."""
    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n<</SYS>>\n\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{% endif %}"
    "{% endfor %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="session")
def tokenizers(lm):
    """ChatML (the real one), a Llama-2 [INST] template, a Gemma-style one (no system role), and none."""
    llama2 = copy.deepcopy(lm.tokenizer)
    llama2.chat_template = LLAMA2_TEMPLATE
    gemma = copy.deepcopy(lm.tokenizer)
    gemma.chat_template = GEMMA_TEMPLATE
    return {"chatml": lm.tokenizer, "llama2": llama2, "gemma": gemma, "plain": plain_tokenizer(lm.tokenizer)}
