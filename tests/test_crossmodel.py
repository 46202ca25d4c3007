"""Cross-model reading through an affine map fitted on shared text."""

from __future__ import annotations

from explorer.core.grid import capture
from explorer.interpret.engine import make_settings
from explorer.methods.crossmodel import CrossReader, fit_affine, interpret_across


def test_affine_map_between_layers_and_models(lm, tiny):
    reader = CrossReader(lm, lm)
    identity, same, far = reader.map(10, 10), reader.map(10, 11), reader.map(2, 25)
    assert identity.r2_heldout > 0.95  # the shared text is long enough to pin down the identity
    assert same.r2_heldout > 0.6  # neighbouring layers of one model are close to affine images
    assert same.r2_heldout > far.r2_heldout  # ... and closer than distant ones
    assert reader.map(10, 11) is same  # fitted once, then kept
    small = tiny("llama")
    m = fit_affine(small, lm, 1, 5)
    assert m.weight.shape == (small.hidden_size, lm.hidden_size)
    texts = interpret_across(lm, same, capture(lm, "The Eiffel Tower").hidden[10, [3]],
                             make_settings(lm, max_new_tokens=6))
    assert len(texts) == 1 and texts[0]
