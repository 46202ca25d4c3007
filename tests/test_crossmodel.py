"""Cross-model reading through an affine map fitted on shared text."""

from __future__ import annotations

from explorer.crossmodel import fit_affine, interpret_across
from explorer.grid import capture
from explorer.interpret import make_settings


def test_affine_map_between_layers_and_models(lm, tiny):
    same = fit_affine(lm, lm, 10, 11)
    far = fit_affine(lm, lm, 2, 25)
    assert same.r2_heldout > 0.6  # neighbouring layers of one model are close to affine images
    assert same.r2_heldout > far.r2_heldout  # ... and closer than distant ones
    small = tiny("llama")
    m = fit_affine(small, lm, 1, 5)
    assert m.weight.shape == (small.hidden_size, lm.hidden_size)
    texts = interpret_across(lm, same, capture(lm, "The Eiffel Tower").hidden[10, [3]],
                             make_settings(lm, max_new_tokens=6))
    assert len(texts) == 1 and texts[0]
