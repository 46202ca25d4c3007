"""Geometry lens: per-cell features against a naive reference, intrinsic dimension by hand, the
reduction inside the hooks, colour modes, prompt features, the probe and the commands."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch

from explorer.methods.geometry.features import GeometryGrid, geometry, hamming, intrinsic_dimension

FIRST_LINEAR = {"llama": "gate_proj", "gpt2": "c_fc", "gpt_neox": "dense_h_to_4h", "phi3": "gate_up_proj"}
TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat by the door."


def _reference_pass(lm, ids):
    """MLP inputs and attention weights of an eager pass read by Hugging Face's own machinery."""
    config = lm.model.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    inputs: list[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0][0].double()))
               for m in lm.arch.mlps]
    try:
        with torch.no_grad():
            out = lm.model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False)
    finally:
        config._attn_implementation = before
        for h in handles:
            h.remove()
    return inputs, [a[0].double() for a in out.attentions]


def _naive(lm, arch, ids):
    """Explicit loops over neurons (region stats and signs) and over heads, queries, keys (dimension)."""
    xs, attentions = _reference_pass(lm, ids)
    n, t = lm.n_layers, len(ids)
    on, dist, dim = (np.full((n + 1, t), np.nan) for _ in range(3))
    signs = []
    for b in range(n):
        layer = getattr(lm.arch.mlps[b], FIRST_LINEAR[arch])
        w = layer.weight.double()
        w = w if isinstance(layer, torch.nn.Linear) else w.T  # GPT-2's Conv1D stores (in, out)
        bias = layer.bias.double() if getattr(layer, "bias", None) is not None else torch.zeros(w.shape[0])
        d_ff = w.shape[0] // 2 if arch == "phi3" else w.shape[0]
        n_on, nearest = torch.zeros(t), torch.full((t,), float("inf"), dtype=torch.float64)
        sign = torch.zeros(t, d_ff, dtype=torch.bool)
        for k in range(d_ff):
            h_k = xs[b] @ w[k] + bias[k]
            n_on += (h_k > 0).double()
            sign[:, k] = h_k > 0
            nearest = torch.minimum(nearest, h_k.abs() / w[k].norm())
        on[b + 1], dist[b + 1] = (n_on / d_ff).numpy(), nearest.numpy()
        signs.append(sign.numpy())
        a = attentions[b]
        for q in range(t):
            total = 0
            for head in range(a.shape[0]):
                peak = max(float(a[head, q, key]) for key in range(t))
                total += sum(1 for key in range(t) if float(a[head, q, key]) > 0.1 * peak)
            dim[b + 1, q] = total
    return on, dist, dim, np.stack(signs)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "phi3"])
def test_features_equal_a_naive_reference(tiny, arch):
    lm = tiny(arch)
    ids = lm.tokenizer.encode(TEXT)[:20]
    g = geometry(lm, ids, codes=True)
    on, dist, dim, signs = _naive(lm, arch, ids)
    assert g.on_fraction.shape == (lm.n_layers + 1, len(ids))
    assert np.isnan(g.on_fraction[0]).all() and np.isnan(g.distance[0]).all() and np.isnan(g.intrinsic_dim[0]).all()
    np.testing.assert_allclose(g.on_fraction[1:], on[1:], atol=1e-9)
    np.testing.assert_allclose(g.distance[1:], dist[1:], rtol=1e-4, atol=2e-6)  # float32 h near 0
    np.testing.assert_array_equal(g.intrinsic_dim[1:], dim[1:])
    d_ff = signs.shape[-1]
    assert g.d_ff == (d_ff,) * lm.n_layers
    np.testing.assert_array_equal(np.unpackbits(g.codes, axis=-1)[..., :d_ff].astype(bool), signs)
    # The model outside the pass is untouched: still its own attention implementation.
    assert lm.model.config._attn_implementation != "eager"


def test_intrinsic_dimension_of_a_hand_made_pattern():
    # Two heads, three causal queries; a key counts when its weight is above 10% of the head's max.
    weights = torch.tensor([
        [[1.0, 0.0, 0.0], [0.95, 0.05, 0.0], [0.6, 0.35, 0.05]],   # head 0: 1, 1, 2 keys
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.34, 0.33, 0.33]],    # head 1: 1, 2, 3 keys
    ])
    assert intrinsic_dimension(weights).tolist() == [2.0, 3.0, 5.0]
    # Exactly 10% of the max does not count; a hair above does.
    assert intrinsic_dimension(torch.tensor([[[0.5, 0.05, 0.45]]])).tolist() == [2.0]
    assert intrinsic_dimension(torch.tensor([[[0.5, 0.0501, 0.4499]]])).tolist() == [3.0]


def test_hamming_counts_differing_signs():
    a = np.packbits(np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1]], dtype=bool), axis=-1)
    b = np.packbits(np.array([[1, 1, 1, 0, 0, 0, 0, 0, 1, 0]], dtype=bool), axis=-1)
    assert hamming(a, b).tolist() == [3]
    assert hamming(a, a).tolist() == [0]


def _live_tensors_with(*sizes: int) -> int:
    return len({id(o) for o in gc.get_objects()
                if isinstance(o, torch.Tensor) and all(s in tuple(o.shape) for s in sizes)})


def test_pre_activations_are_reduced_inside_the_hooks(tiny):
    """When the last block's MLP starts, no earlier block's (T, d_ff) pre-activations are alive."""
    lm = tiny("llama")
    ids = (lm.tokenizer.encode(TEXT) * 3)[:41]  # T = 41: neither d (64) nor d_ff (128)
    d_ff = lm.arch.mlps[0].gate_proj.out_features
    seen: list[int] = []
    handle = lm.arch.mlps[-1].register_forward_pre_hook(lambda _m, _a: seen.append(_live_tensors_with(41, d_ff)))
    kept = torch.zeros(1, 41, d_ff)  # the detector sees a retained tensor of that shape
    try:
        assert _live_tensors_with(41, d_ff) == 1
        del kept
        g = geometry(lm, ids, codes=True)
    finally:
        handle.remove()
    assert seen == [0]
    assert isinstance(g, GeometryGrid) and g.codes is not None and g.codes.shape == (lm.n_layers, 41, d_ff // 8)


def test_geometry_reads_the_callers_model_variant(lm):
    """A control edit applied in this context changes the geometry of the blocks after it."""
    from explorer.methods.control import Edit, applied

    ids = lm.tokenizer.encode(TEXT)[:12]
    plain = geometry(lm, ids)
    mlp = lm.arch.mlps[3]
    params = {k: v.clone() for k, v in mlp.state_dict().items()}
    params["down_proj.weight"] = params["down_proj.weight"] * 4.0
    with applied(lm, Edit(layer=4, params=params)):
        edited = geometry(lm, ids)
    np.testing.assert_array_equal(edited.on_fraction[:5], plain.on_fraction[:5])  # blocks 0..3 read the same input
    assert np.abs(edited.on_fraction[5:] - plain.on_fraction[5:]).max() > 0.01


def test_cli_geometry_writes_features_csv(tmp_path, capsys):
    import pandas as pd

    from explorer.tools.cli import main

    out = tmp_path / "features.csv"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def f(x):\n    return x + 1\n\nThe cat sat on the mat.\n", encoding="utf-8")
    assert main(["geometry", "--prompts", str(prompts), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    # The paper's 7 statistics per layer by default; the attention columns only when asked for.
    assert len(frame) == 2 and "layer30_s_mean" in frame.columns and "layer1_id_last" not in frame.columns
    assert len(frame.columns) == 1 + 7 * 30
    assert main(["geometry", "--prompts", str(prompts), "--out", str(out), "--features", "extended"]) == 0
    assert "layer1_id_last" in pd.read_csv(out).columns and len(pd.read_csv(out).columns) == 1 + 9 * 30
    assert main(["geometry", "--prompt", "hi", "--out", str(tmp_path / "x.txt")]) == 2
    assert "error:" in capsys.readouterr().err


def test_prompt_features_are_the_papers_seven_statistics_with_sample_std(tiny):
    """Per layer: mean, min, max, std of s_t; min, mean, std of d_t; std with divisor T - 1 as in the
    authors' code (torch's default), checked against Python's statistics module on the grid's cells."""
    import statistics

    from explorer.methods.geometry.prompt_features import prompt_features

    lm = tiny("llama")
    text = "A short prompt about rivers, bridges and the sea."
    feats = prompt_features(lm, [text, "Hi"], max_tokens=12)
    g = geometry(lm, lm.tokenizer.encode(text, add_special_tokens=True)[:12])
    assert feats.values.shape == (2, lm.n_layers, 7)
    for i in range(lm.n_layers):
        s, d = [float(v) for v in g.on_fraction[i + 1]], [float(v) for v in g.distance[i + 1]]
        expected = [statistics.fmean(s), min(s), max(s), statistics.stdev(s), min(d), statistics.fmean(d),
                    statistics.stdev(d)]
        np.testing.assert_allclose(feats.values[0, i], expected, rtol=1e-6, atol=1e-9)
    extended = prompt_features(lm, [text], max_tokens=12, features="extended")
    np.testing.assert_array_equal(extended.values[0, :, 7], g.intrinsic_dim[1:, -1])
    if len(lm.tokenizer.encode("Hi", add_special_tokens=True)) == 1:  # one token: no sample std
        assert np.isnan(feats.values[1, :, 3]).all()


def test_geometric_probe_is_class_balanced():
    """With 3 times more prompts of one label, the balanced probe still finds the minority class: its
    cross-validated predictions match an explicitly class-weighted reference."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from explorer.methods.geometry.probe import cross_validated_auc

    rng = np.random.default_rng(3)
    y = np.array(["a"] * 45 + ["b"] * 15)
    x = rng.normal(size=(60, 6)) + (y == "b")[:, None] * 0.8
    yi = (y == "b").astype(int)
    weights = {0: 60 / (2 * 45), 1: 60 / (2 * 15)}
    ref = make_pipeline(StandardScaler(), LogisticRegression(class_weight=weights, max_iter=2000))
    proba = cross_val_predict(ref, x, yi, cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    assert cross_validated_auc(x, y) == pytest.approx(roc_auc_score(y == "b", proba[:, 1]), abs=1e-12)
    plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    unbalanced = cross_val_predict(plain, x, yi, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                   method="predict_proba")
    assert not np.allclose(unbalanced, proba)  # the weighting changes the fit


def test_geometry_eval_quick_prints_the_figures(capsys):
    from explorer.tools.cli import main

    assert main(["geometry-eval", "--quick"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("auc_geometry_all", "auc_geometry_best_layer", "auc_state_best_layer", "cost_ratio_64"):
        assert 0.0 < last[key] < 100.0, key
    assert last["auc_geometry_all"] > 0.8


def test_colour_modes_show_the_pass_once_per_grid_and_variant(lm):
    from explorer.core.grid import capture
    from explorer.core.hooks import model_variant
    from explorer.methods.colouring import COLOUR_MODES, colour_layer

    grid = capture(lm, "Colour modes of the geometry lens, drawn twice.")
    calls: list[int] = []
    handle = lm.arch.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        cols = list(range(grid.n_tokens))
        on = colour_layer("geometry_on_fraction", grid, lm, cols)
        dist = colour_layer("geometry_log_distance", grid, lm, cols[2:5])
        dim = colour_layer("geometry_intrinsic_dim", grid, lm, cols)
        assert len(calls) == 1  # one pass serves all three modes and every window
        with model_variant("another-model"):
            colour_layer("geometry_on_fraction", grid, lm, cols)
        assert len(calls) == 2  # a different model variant is not served from the cache
    finally:
        handle.remove()
    assert {"geometry_on_fraction", "geometry_log_distance", "geometry_intrinsic_dim"} <= set(COLOUR_MODES)
    ref = geometry(lm, grid.token_ids)
    np.testing.assert_array_equal(on.values, ref.on_fraction)
    np.testing.assert_array_equal(dist.values, np.log(ref.distance[:, 2:5]))
    np.testing.assert_array_equal(dim.values, ref.intrinsic_dim)
    assert np.isnan(on.values[0]).all() and "embeddings: no block" in on.hover[0][0]
    assert f"neurons on {ref.on_fraction[30, 3]:.3f}" in on.hover[30][3] and "block 29" in on.hover[30][3]


def test_compare_colours_aligned_tokens_by_region_code_hamming(lm):
    from explorer.core.grid import capture
    from explorer.methods.compare import Comparison, align_tokens, hamming_grid

    grid_a, grid_b = capture(lm, "The cat sat on the mat"), capture(lm, "The dog sat on the mat")
    pairs = align_tokens(grid_a.tokens, grid_b.tokens)
    layers = [0, 5, 30]
    got = hamming_grid(lm, grid_a, grid_b, pairs, layers)
    # Naive: the gate's sign pattern from each MLP input, compared neuron by neuron.
    xa, _ = _reference_pass(lm, grid_a.token_ids)
    xb, _ = _reference_pass(lm, grid_b.token_ids)
    for i, layer in enumerate(layers[1:], start=1):
        w = lm.arch.mlps[layer - 1].gate_proj.weight.double()
        for j, (a, b) in enumerate(pairs):
            differing = sum(int((xa[layer - 1][a] @ w[k] > 0) != (xb[layer - 1][b] @ w[k] > 0)) for k in range(w.shape[0]))
            assert abs(got[i, j] - differing / w.shape[0]) <= 2 / w.shape[0]  # a sign at |h| ~ 1e-7 may flip
    assert np.isnan(got[0]).all()
    assert got[1:, pairs.index((0, 0))].tolist() == [0.0, 0.0]  # the same first token: the same region
    assert (got[1:, pairs.index((1, 1))] > 0.05).all()  # "cat" and "dog" sit in different regions
    texts = [["x"] * len(pairs) for _ in layers]
    cmp = Comparison(grid_a, grid_b, layers, pairs, texts, texts, np.zeros((3, len(pairs)), bool), got)
    fig = cmp.figure()
    np.testing.assert_allclose(fig["data"][0]["z"][1], got[1], atol=1e-4)
    assert fig["data"][0]["z"][0] == [None] * len(pairs) and "Hamming" in fig["data"][0]["text"][1][1]
    assert cmp.rows()[len(pairs) + 1]["hamming"] == got[1, 1]
