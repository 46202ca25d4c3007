"""A model sharded by a device map (half its blocks offloaded to disk by accelerate) reads exactly
like the same model in one piece: grid, logit lens, interpretations, steering and control edits."""

from __future__ import annotations

import pytest
import torch

from explorer.api import Explorer
from explorer.core.grid import capture
from explorer.core.models import load_model
from explorer.methods.control.edit import Edit, applied
from explorer.methods.control.steering import steer

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Blocks 0-14 (and embedding, norm, head) on the CPU, blocks 15-29 on disk."""
    dm = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" if i < 15 else "disk" for i in range(30)})
    return load_model("default", device_map=dm, offload_folder=str(tmp_path_factory.mktemp("offload")), cache=False)


def test_the_model_is_really_split(sharded, lm):
    assert set(sharded.model.hf_device_map.values()) == {"cpu", "disk"}
    assert sharded.arch.blocks[20].mlp.down_proj.weight.device.type == "meta"  # only loaded during its pass
    assert lm.arch.blocks[20].mlp.down_proj.weight.device.type == "cpu"
    assert sharded.device == torch.device("cpu")


def test_grid_and_lens_match_the_unsharded_model(sharded, lm):
    g0, g1 = capture(lm, PROMPT), capture(sharded, PROMPT)
    assert torch.equal(g0.hidden, g1.hidden)
    l0, l1 = g0.lens(lm, rows=[5, 20, 30], k=5), g1.lens(sharded, rows=[5, 20, 30], k=5)
    assert (l0.ids == l1.ids).all()
    assert l0.probs == pytest.approx(l1.probs, abs=1e-6)


def test_interpretations_match(sharded, lm):
    grid = capture(lm, PROMPT)
    cells = [(15, 7), (25, 3)]
    a = Explorer(lm).interpret(grid, cells, max_new_tokens=6)
    b = Explorer(sharded).interpret(grid, cells, max_new_tokens=6)
    for cell in cells:
        x, y = a.get(*cell), b.get(*cell)
        assert x is not None and y is not None
        assert x.generated_ids == y.generated_ids and x.interpretation == y.interpretation
        assert y.relevancy_score == pytest.approx(x.relevancy_score, abs=1e-5)


def test_steering_an_offloaded_block_matches(sharded, lm):
    vector = capture(lm, "I am thinking about the ocean").hidden[20, -1]
    a = steer(lm, "Tell me about your day.", vector, 20, 2.0, max_new_tokens=5, chat=False)
    b = steer(sharded, "Tell me about your day.", vector, 20, 2.0, max_new_tokens=5, chat=False)
    assert a["after"] == b["after"] and a["before"] == b["before"]
    assert a["after"] != a["before"]  # the vector did something


def test_control_edit_of_an_offloaded_block_matches(sharded, lm):
    # A deliberate change to block 19's MLP (row 20): its private copy must hold the edited weights,
    # not the offloaded originals that accelerate would load for the shared module.
    params = {k: v * 1.5 for k, v in lm.arch.mlps[19].state_dict().items()}
    edit = Edit(layer=20, params=params)
    with applied(lm, edit):
        g0 = capture(lm, PROMPT)
    with applied(sharded, edit):
        g1 = capture(sharded, PROMPT)
    assert torch.equal(g0.hidden, g1.hidden)
    assert not torch.equal(g1.hidden[20], capture(sharded, PROMPT).hidden[20])
