"""Colour modes and the token-identity Patchscope."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.errors import InputError
from explorer.core.grid import capture
from explorer.methods.colouring import COLOUR_MODES, colour_layer
from explorer.methods.lenses import patchscope_next_token, token_identity, token_identity_ids


@pytest.fixture(scope="module")
def grid(lm):
    return capture(lm, "The Eiffel Tower is in the city of")


def test_token_identity_last_row_matches_the_model(lm, grid):
    """Patching row N into the final norm's input of the target must read back the model's own
    prediction when the target is the source itself at the same position (identity check)."""
    ids = grid.token_ids
    tok, _ = patchscope_next_token(lm, grid.hidden[30, [8]], 30, ids, position=8)
    assert tok[0] == grid.next_token_ids(lm)[8]
    # And patching a state into its own prompt at its own layer changes nothing at any layer.
    for layer in (0, 10, 29):
        tok, _ = patchscope_next_token(lm, grid.hidden[layer, [8]], layer, ids, position=8)
        assert tok[0] == grid.next_token_ids(lm)[8]


def test_token_identity_grid(lm, grid):
    ti = token_identity(lm, grid, rows=[1, 15, 30], cols=[3, 7, 8])
    assert ti.hit.shape == (3, 3) and set(np.unique(ti.hit)) <= {0.0, 1.0}
    own = grid.next_token_ids(lm)[[3, 7, 8]]
    assert ((ti.predicted == own[None]) == (ti.hit == 1)).all()
    assert ti.hit[2].mean() >= ti.hit[0].mean()  # late layers carry the prediction better than layer 1


@pytest.mark.parametrize("mode", list(COLOUR_MODES))
def test_colour_modes(lm, grid, mode):
    layer = colour_layer(mode, grid, lm, cols=[0, 1, 2])
    if mode in ("relevancy", "causal"):  # relevancy has no base layer; the causal effect needs an answer first
        assert layer is None
        return
    assert layer.values.shape == (31, 3) and len(layer.hover) == 31 and len(layer.hover[0]) == 3
    if mode.startswith("geometry_"):  # row 0 (the embeddings) has no block: blank; see test_geometry for values
        assert np.isnan(layer.values[0]).all() and np.isfinite(layer.values[1:]).all()
        return
    assert np.isfinite(layer.values).all() and (layer.values >= 0).all() and (layer.values <= 1).all()
    with pytest.raises(InputError):
        colour_layer("rainbow", grid, lm, cols=[0])


def test_final_rank_is_zero_on_the_last_row(lm, grid):
    layer = colour_layer("final_rank", grid, lm, cols=list(range(9)))
    assert (layer.values[30] == 0).all() and layer.values[1:10].mean() > 0


def test_target_prompt_ids(lm):
    ids = token_identity_ids(lm)
    assert lm.tokenizer.decode(ids).endswith("?")
    assert torch.tensor(ids).ndim == 1


def test_token_identity_is_computed_once_per_grid(lm):
    """The whole grid is read in batched passes once; a redraw (a second call, any column window)
    makes no forward pass, and its values equal a per-layer reference computed independently."""
    from explorer.methods.lenses import token_identity_cached

    g = capture(lm, "Paris is lovely")
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        seen = []
        first = token_identity(lm, g, progress=lambda done, total: seen.append((done, total)))
        passes = len(calls)
        cells = g.n_rows * g.n_tokens
        assert passes == -(-cells // 64) and seen[-1] == (cells, cells)  # batched across layers
        assert token_identity_cached(lm, g)
        again = token_identity(lm, g)
        part = colour_layer("token_identity", g, lm, cols=[g.n_tokens - 1])
        assert len(calls) == passes  # no forward pass the second time
    finally:
        handle.remove()
    assert (again.predicted == first.predicted).all() and part.values.shape == (g.n_rows, 1)
    target = token_identity_ids(lm)
    for layer in (0, 12, g.n_rows - 1):  # reference: one layer at a time, the original Patchscope call
        tok, _ = patchscope_next_token(lm, g.hidden[layer], layer, target)
        assert (first.predicted[layer] == tok).all()


def test_token_identity_stops_between_passes(lm):
    from explorer.methods.lenses import token_identity_cached

    g = capture(lm, "Stop here")
    assert token_identity(lm, g, batch_size=8, should_stop=lambda: True) is None
    assert not token_identity_cached(lm, g)
