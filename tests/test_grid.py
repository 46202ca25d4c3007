"""Grid capture: one pass gives every residual-stream state; lazy logit lens; cell parsing."""

from __future__ import annotations

import pytest
import torch

from explorer.core.errors import InputError
from explorer.core.grid import capture, parse_cells
from tests.conftest import TINY_ARCHS

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def grid(lm):
    return capture(lm, PROMPT)


def test_rows_are_hf_hidden_states_and_last_row_is_unnormed(lm, grid):
    ids = torch.tensor([grid.token_ids])
    with torch.inference_mode():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    hs = out.hidden_states
    assert grid.hidden.shape == (31, 9, 576)
    for i in range(30):
        assert torch.equal(hs[i][0], grid.hidden[i])
    assert not torch.allclose(hs[30][0], grid.hidden[30])  # HF's last one is after the final norm
    assert torch.allclose(lm.arch.final_norm(grid.hidden[30]), hs[30][0], atol=1e-5)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_capture_on_tiny_architectures(tiny, arch):
    lm = tiny(arch)
    g = capture(lm, "a b a b")
    ids = torch.tensor([g.token_ids])
    with torch.inference_mode():
        hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert g.hidden.shape[0] == lm.n_layers + 1
    for i in range(lm.n_layers):
        assert torch.allclose(hs[i][0], g.hidden[i], atol=1e-6)


def test_tokens_special_flags_and_duplicates(lm):
    g = capture(lm, "cat cat cat", chat=True)
    assert g.tokens[0] == "<|im_start|>" and g.special[0]
    assert g.tokens.count(" cat") == 2 and g.n_tokens == len(g.token_ids)
    plain = capture(lm, "cat cat cat")
    assert not any(plain.special)
    cats = [i for i, t in enumerate(plain.tokens) if t.strip() == "cat"]
    assert len(cats) == 3 and not torch.equal(plain.hidden[10, cats[1]], plain.hidden[10, cats[2]])


def test_logit_lens(lm, grid):
    lens = grid.lens(lm, rows=[0, 15, 30], cols=[7, 8], k=3)
    assert lens.probs.shape == (3, 2, 3) and lens.ids.shape == (3, 2, 3)
    assert (lens.probs[:, :, 0] >= lens.probs[:, :, 1]).all()
    with torch.inference_mode():
        own = lm.model(input_ids=torch.tensor([grid.token_ids])).logits[0].argmax(-1)
    assert lens.ids[2, 1, 0] == own[8] and lens.ids[2, 0, 0] == own[7]
    assert (lens.final_rank[2] == 0).all()
    assert lm.tokenizer.decode([int(lens.ids[2, 1, 0])]).strip() == "Paris"
    again = grid.lens(lm, rows=[15], cols=[8], k=3)
    assert (again.ids[0, 0] == lens.ids[1, 1]).all()


def test_parse_cells(grid):
    assert len(parse_cells("all", grid)) == 31 * 9
    assert parse_cells("row:3", grid) == [(3, t) for t in range(9)]
    assert parse_cells("col:2", grid) == [(layer, 2) for layer in range(31)]
    assert parse_cells("15:7, 0:0", grid) == [(15, 7), (0, 0)]
    assert parse_cells([(1, 2), [3, 4]], grid) == [(1, 2), (3, 4)]
    for bad in ["31:0", "0:9", "-1:0", "x:y", "15", "", "row:99", [(1.5, 2)], [(1,)], [("a", 1)]]:
        with pytest.raises(InputError):
            parse_cells(bad, grid)


@pytest.mark.parametrize("prompt", ["", "   \n\t ", None])
def test_empty_prompts_rejected(lm, prompt):
    with pytest.raises(InputError, match="empty"):
        capture(lm, prompt)


def test_over_long_prompt_rejected(lm):
    with pytest.raises(InputError, match="limit is 16"):
        capture(lm, "word " * 40, max_tokens=16)


@pytest.mark.parametrize("text", ["مرحبا بالعالم", "emoji 🚀🧠 test", "ctrl\x00\x07chars", "\u202eRTL override", "日本語"])
def test_odd_unicode_is_captured(lm, text):
    g = capture(lm, text)
    assert g.n_tokens >= 1 and torch.isfinite(g.hidden).all()
