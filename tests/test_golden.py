"""Golden test: the engine against a naive SelfIE written here from the method's definition.

The naive reading uses no KV cache, no prefix sharing, no batching and no prefix tree: for every
generated token it runs a full forward over prompt + tokens so far, with a plain forward pre-hook
on block k writing the state over the placeholder positions; p(y_j | without the state) is plain
teacher forcing of the generated tokens after the unpatched prompt. The engine must give the same
tokens exactly and the same relevancy to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.grid import capture
from explorer.core.prompts import build_interpretation_prompt
from explorer.interpret.engine import Interpreter, collect, make_settings
from tests.conftest import TINY_ARCHS


def naive_selfie(lm, prompt_ids, positions, k, vector, strength, max_new_tokens):
    """(generated ids, p_with, p_without) of one state, by the definition, one full forward per token."""
    block = lm.arch.blocks[k]
    vec = vector.to(lm.dtype)

    def overwrite(_module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        hidden = hidden.clone()
        for p in positions:
            hidden[0, p] = strength * vec + (1 - strength) * hidden[0, p]
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": hidden}
        return (hidden, *args[1:]), kwargs

    generated: list[int] = []
    p_with: list[float] = []
    handle = block.register_forward_pre_hook(overwrite, with_kwargs=True)
    try:
        with torch.no_grad():
            for _ in range(max_new_tokens):
                ids = torch.tensor([list(prompt_ids) + generated])
                probs = torch.softmax(lm.model(input_ids=ids, use_cache=False).logits[0, -1].double(), -1)
                tok = int(probs.argmax())
                if tok in lm.eos_token_ids:
                    break
                generated.append(tok)
                p_with.append(float(probs[tok]))
    finally:
        handle.remove()
    if not generated:
        return generated, [], []
    with torch.no_grad():  # teacher forcing without the state
        ids = torch.tensor([list(prompt_ids) + generated])
        probs = torch.softmax(lm.model(input_ids=ids, use_cache=False).logits[0].double(), -1)
    n = len(prompt_ids)
    p_without = [float(probs[n - 1 + j, t]) for j, t in enumerate(generated)]
    return generated, p_with, p_without


def check_against_naive(lm, grid, cells, settings, batch_size, atol=1e-5):
    prompt = build_interpretation_prompt(lm.tokenizer, settings.template, settings.n_placeholders)
    got = collect(Interpreter(lm).iter_cells(grid, cells, settings, batch_size=batch_size))
    for layer, token in cells:
        ids, p_with, p_without = naive_selfie(lm, prompt.ids, prompt.placeholder_positions, settings.k,
                                              grid.hidden[layer, token], settings.strength, settings.max_new_tokens)
        cell = got[(layer, token)]
        assert cell.generated_ids == ids, (layer, token)
        assert len(ids) > 0
        # each probability to a relative 1e-4 (tiny random models give p ~ 1e-5, where an absolute
        # tolerance would say nothing), and relevancy |p_with - p_without| to ``atol``
        np.testing.assert_allclose(cell.p_with, p_with, rtol=1e-4, atol=0)
        np.testing.assert_allclose(cell.p_without, p_without, rtol=1e-4, atol=0)
        rel = [abs(a - b) for a, b in zip(p_with, p_without)]
        np.testing.assert_allclose(cell.relevancy_score, rel, atol=atol, rtol=0)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_engine_equals_naive_selfie_on_tiny_models(tiny, arch):
    lm = tiny(arch)
    grid = capture(lm, "one two three four five")
    settings = make_settings(lm, "refers_to", max_new_tokens=6, k=1)
    cells = [(0, 1), (2, 3), (3, 4)]
    check_against_naive(lm, grid, cells, settings, batch_size=3)


def test_engine_equals_naive_selfie_with_partial_strength(tiny):
    lm = tiny("llama")
    grid = capture(lm, "seven eight nine")
    settings = make_settings(lm, "summarize", max_new_tokens=5, k=2, strength=0.5, n_placeholders=3)
    check_against_naive(lm, grid, [(1, 1), (3, 2)], settings, batch_size=2)


def test_engine_equals_naive_selfie_on_the_embedded_model(lm):
    """Tokens agree exactly; probabilities to a relative 1e-4. Relevancy agrees to 3e-5 here, not 1e-5:
    see docs/architecture.md ("Golden test") for the residual difference on this model."""
    grid = capture(lm, "The Eiffel Tower is in the city of")
    settings = make_settings(lm, "refers_to", max_new_tokens=8)
    check_against_naive(lm, grid, [(10, 3), (15, 7), (22, 5)], settings, batch_size=3, atol=3e-5)

