"""SelfIE interpretation: injection matters, batching is exact, greedy always, relevancy well-formed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.errors import InputError
from explorer.core.grid import capture
from explorer.interpret.engine import Interpreter, collect, make_settings
from explorer.interpret.relevancy import RelevancyScorer
from tests.conftest import TINY_ARCHS

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def grid(lm):
    return capture(lm, PROMPT)


@pytest.fixture(scope="module")
def settings(lm):
    return make_settings(lm, "refers_to", max_new_tokens=8)


def test_injected_state_changes_the_reading(lm, grid):
    s = make_settings(lm, "refers_to", max_new_tokens=12)
    it = Interpreter(lm)
    baseline = it.interpret_text_without_state(s)
    res = collect(it.iter_cells(grid, [(15, 7), (10, 3)], s))
    for cell in res.values():
        assert cell.interpretation and cell.interpretation != baseline
        assert max(cell.relevancy_score) > 0.05
        assert len(cell.relevancy_score) == len(cell.generated_ids) == len(cell.p_with) == len(cell.token_texts)
    assert "Tower" in res[(10, 3)].interpretation


def test_batched_equals_one_by_one(lm, grid, settings):
    cells = [(layer, token) for layer in (2, 6, 10, 14, 18, 22, 26, 30) for token in (3, 7)]
    assert len(cells) == 16
    runs = {}
    for bs in (1, 4, 16):
        runs[bs] = collect(Interpreter(lm).iter_cells(grid, cells, settings, batch_size=bs))
    for cell in cells:
        ref = runs[1][cell]
        for bs in (4, 16):
            other = runs[bs][cell]
            assert other.interpretation == ref.interpretation, (cell, bs)
            assert other.generated_ids == ref.generated_ids
            np.testing.assert_allclose(other.relevancy_score, ref.relevancy_score, atol=1e-4)


def test_sampling_generation_config_does_not_switch_injection_off(lm, grid, settings):
    ref = collect(Interpreter(lm).iter_cells(grid, [(12, 3)], settings))[(12, 3)]
    gc = lm.model.generation_config
    saved = (gc.do_sample, gc.temperature, gc.top_k)
    try:
        gc.do_sample, gc.temperature, gc.top_k = True, 1.5, 5
        torch.manual_seed(123)
        got = collect(Interpreter(lm).iter_cells(grid, [(12, 3)], settings))[(12, 3)]
    finally:
        gc.do_sample, gc.temperature, gc.top_k = saved
    assert got.generated_ids == ref.generated_ids


def test_strength_and_k_change_the_reading(lm, grid):
    it = Interpreter(lm)
    full = collect(it.iter_cells(grid, [(15, 3)], make_settings(lm, max_new_tokens=8)))[(15, 3)]
    half = collect(it.iter_cells(grid, [(15, 3)], make_settings(lm, max_new_tokens=8, strength=0.3)))[(15, 3)]
    k2 = collect(it.iter_cells(grid, [(15, 3)], make_settings(lm, max_new_tokens=8, k=2)))[(15, 3)]
    assert half.generated_ids != full.generated_ids or half.p_with != full.p_with
    assert k2.p_with != full.p_with


def test_generation_stops_at_eos_and_relevancy_excludes_it(lm, grid):
    s = make_settings(lm, "refers_to", max_new_tokens=40)
    res = collect(Interpreter(lm).iter_cells(grid, [(20, 3), (25, 8), (5, 1)], s, batch_size=3))
    eos = lm.eos_token_ids
    ended_early = 0
    for cell in res.values():
        assert not eos & set(cell.generated_ids)
        assert len(cell.relevancy_score) == len(cell.generated_ids)
        ended_early += len(cell.generated_ids) < 40
    assert ended_early >= 1


def test_streaming_yields_prefixes_then_the_final_text(lm, grid, settings):
    events = list(Interpreter(lm).iter_cells(grid, [(14, 7)], settings, batch_size=1, stream_tokens=True))
    partial = [e for e in events if e.partial]
    final = events[-1]
    assert final.complete and len(partial) >= 3
    for p in partial:
        assert final.generated_ids[: len(p.generated_ids)] == p.generated_ids


def test_cache_returns_repeat_clicks(lm, grid, settings):
    it = Interpreter(lm)
    first = collect(it.iter_cells(grid, [(9, 2)], settings))[(9, 2)]
    again = list(it.iter_cells(grid, [(9, 2)], settings))
    assert len(again) == 1 and again[0].cached and again[0].interpretation == first.interpretation
    other = list(it.iter_cells(grid, [(9, 2)], make_settings(lm, "summarize", max_new_tokens=8)))
    assert not other[-1].cached


def test_shared_batcher_gives_the_same_results(lm, grid, settings):
    import threading

    cells = [(layer, 5) for layer in range(4, 12)]
    ref = collect(Interpreter(lm).iter_cells(grid, cells, settings, batch_size=8))
    it = Interpreter(lm, batching=True)
    out = {}

    def click(c):
        out[c] = collect(it.iter_cells(grid, [c], settings, batch_size=1))[c]

    threads = [threading.Thread(target=click, args=(c,)) for c in cells]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert max(it.scheduler.batch_sizes) > 1  # clicks were batched together
    for c in cells:
        assert out[c].generated_ids == ref[c].generated_ids
        np.testing.assert_allclose(out[c].relevancy_score, ref[c].relevancy_score, atol=1e-4)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_architectures_batch_exactly(tiny, arch):
    lm = tiny(arch)
    g = capture(lm, "one two three four")
    s = make_settings(lm, "refers_to", max_new_tokens=5)
    cells = [(layer, t) for layer in range(lm.n_layers + 1) for t in range(2)]
    a = collect(Interpreter(lm).iter_cells(g, cells, s, batch_size=1))
    b = collect(Interpreter(lm).iter_cells(g, cells, s, batch_size=len(cells)))
    for c in cells:
        assert a[c].generated_ids == b[c].generated_ids
        assert len(a[c].relevancy_score) == len(a[c].generated_ids) <= 5


def test_base_model_template(tiny):
    lm = tiny("llama", chat=False)
    s = make_settings(lm, None, max_new_tokens=4)
    assert s.template.name == "base" and not s.template.chat
    g = capture(lm, "hello world")
    res = collect(Interpreter(lm).iter_cells(g, [(1, 1)], s))
    assert len(res[(1, 1)].generated_ids) <= 4


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=0), dict(max_new_tokens=10**6), dict(k=30), dict(k=-1),
                                    dict(n_placeholders=0), dict(strength=0), dict(strength=float("nan")),
                                    dict(max_new_tokens="ten")])
def test_bad_settings_are_clear_errors(lm, kwargs):
    with pytest.raises(InputError):
        make_settings(lm, **kwargs)


def test_bad_batch_size(lm, grid, settings):
    for bs in (0, -3, 10**6, 2.5):
        with pytest.raises(InputError):
            list(Interpreter(lm).iter_cells(grid, [(1, 1)], settings, batch_size=bs))


def _continuations(lm, settings, n=12):
    """Real greedy continuations of ``n`` states: they share first tokens and differ in length."""
    grid = capture(lm, "The Eiffel Tower is in the city of Paris")
    vectors = torch.stack([grid.hidden[layer, token] for layer in (0, lm.n_layers // 2, lm.n_layers)
                           for token in range(n // 3)])
    return Interpreter(lm).generate_now(vectors, settings).ids


@pytest.mark.parametrize("arch", ["real", *TINY_ARCHS])
def test_prefix_tree_relevancy_pass_equals_the_padded_batch(lm, tiny, arch):
    model = lm if arch == "real" else tiny(arch)
    settings = make_settings(model, max_new_tokens=8)
    seqs = _continuations(model, settings)
    seqs = [*seqs, [*seqs[0][:2], 7, 8], [*seqs[0][:2], 9]]  # two more that branch off the first one
    interp = Interpreter(model)
    state = interp.prompt_state(settings)
    long = [tuple(s) for s in seqs if len(s) > 1]
    tree, padded = interp.relevancy.p_tree(state, long), interp.relevancy.p_padded(state, long)
    for a, b in zip(tree, padded):
        assert len(a) == len(b)
        np.testing.assert_allclose(a, b, atol=1e-5)
    got = interp.p_without(seqs, settings, max_nodes=16)  # several packed groups
    assert interp.relevancy.tree_ok is True
    assert [len(g) for g in got] == [len(s) for s in seqs]
    for seq, probs in zip(long, tree):
        assert got[seqs.index(list(seq))][1:] == pytest.approx(probs, abs=1e-5)


def test_a_model_that_ignores_the_tree_mask_keeps_the_padded_batch(lm, settings):
    class MaskBlind(RelevancyScorer):
        def p_tree(self, state, seqs):  # what a model ignoring custom 4D masks would give: wrong numbers
            return [[p * 0.5 for p in row] for row in super().p_tree(state, seqs)]

    seqs = _continuations(lm, settings)
    blind, plain = Interpreter(lm), Interpreter(lm)
    blind.relevancy = MaskBlind(lm)
    plain.relevancy.tree_ok = False
    assert blind.p_without(seqs, settings) == plain.p_without(seqs, settings)
    assert blind.relevancy.tree_ok is False


def test_prefix_tree_computes_each_prefix_once():
    from explorer.interpret.prefix_tree import PrefixTree, pack

    seqs = [(1, 2, 3, 4), (1, 2, 5), (1, 2, 3, 6), (7,), (7, 8)]
    tree = PrefixTree.build(seqs)
    # inputs are seq[:-1]: prefixes (1), (1,2), (1,2,3), (7): four nodes
    assert tree.tokens == [1, 2, 3, 7] and tree.parents == [-1, 0, 1, -1] and tree.depths == [0, 1, 2, 0]
    assert tree.paths == [[0, 1, 2], [0, 1], [0, 1, 2], [], [3]]
    sees = tree.ancestry()
    assert sees[2].tolist() == [True, True, True, False] and sees[3].tolist() == [False, False, False, True]
    mask = tree.attention_mask(5, torch.float32, "cpu")
    assert mask.shape == (1, 1, 4, 9) and (mask[0, 0, :, :5] == 0).all() and mask[0, 0, 0, 6] < -1e30
    assert tree.position_ids(5, "cpu").tolist() == [[5, 6, 7, 5]]
    groups = pack(seqs, max_nodes=3)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for g in groups:
        assert len(PrefixTree.build([seqs[i] for i in g])) <= 3 or len(g) == 1
