"""Comparing two prompts: token alignment and the cells whose readings differ."""

from __future__ import annotations

from explorer.api import Explorer
from explorer.methods.compare import align_tokens, compare_prompts


def test_align_tokens():
    assert align_tokens(["The", " cat", " sat"], ["The", " dog", " sat"]) == [(0, 0), (1, 1), (2, 2)]
    assert align_tokens(["The", " big", " cat", " sat"], ["The", " cat", " sat"]) == [(0, 0), (2, 1), (3, 2)]
    assert align_tokens(["a", "b"], ["x", "y", "z"]) == [(0, 0), (1, 1)]


def test_compare_prompts(lm):
    ex = Explorer(lm)
    cmp = compare_prompts(ex, "The cat sat on the mat", "The dog sat on the mat", [10, 20],
                          ex.settings(max_new_tokens=6))
    assert cmp.differs.shape == (2, len(cmp.pairs)) and len(cmp.pairs) == 6
    # identical prefix "The" at position 0 reads the same in both prompts (causal model)
    j = cmp.pairs.index((0, 0))
    assert not cmp.differs[:, j].any()
    k = cmp.pairs.index((1, 1))  # "cat" vs "dog": the readings of the changed word differ
    assert cmp.differs[:, k].any()
    fig = cmp.figure()
    assert fig["data"][0]["type"] == "heatmap" and len(cmp.rows()) == 2 * len(cmp.pairs)
