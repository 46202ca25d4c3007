"""Hooks change exactly what they should, only for their own context, and always come off."""

from __future__ import annotations

import threading

import pytest
import torch

from explorer.core.hooks import MODEL_VARIANT, edit_input, edit_output, inject, overwrite_positions, record


def _run(lm, ids, blocks=True):
    with torch.inference_mode(), record(lm.arch.blocks) as outs:
        logits = lm.model(input_ids=ids).logits
    return logits, [o[-1] for o in outs]


def test_injection_changes_only_patched_positions(lm):
    ids = torch.tensor([lm.tokenizer.encode("one two three four five six seven")] * 3)
    k, positions = 4, [2, 3]
    vec = torch.randn(3, lm.hidden_size) * 5
    vec[1] = 0  # placeholder
    base_logits, base = _run(lm, ids)
    with torch.inference_mode(), record([lm.arch.blocks[k]], inputs=True) as ins:
        lm.model(input_ids=ids)
    original_input = ins[0][-1]
    vec[1] = original_input[1, 2]  # row 1 injects what is already there (pos 2) ...
    vec[1] = original_input[1, 2]
    with inject(lm.arch.blocks[k], positions, vec), record([lm.arch.blocks[k]], inputs=True) as ins2:
        logits, outs = _run(lm, ids)
    patched_input = ins2[0][-1]
    # The block input is the vector at the patched positions, untouched elsewhere.
    assert torch.equal(patched_input[0, 2], vec[0]) and torch.equal(patched_input[0, 3], vec[0])
    assert torch.equal(patched_input[:, :2], original_input[:, :2])
    assert torch.equal(patched_input[:, 4:], original_input[:, 4:])
    # Blocks before k and positions before the first patched one are bit-identical.
    for i in range(k):
        assert torch.equal(outs[i], base[i])
    for i in range(k, lm.n_layers):
        assert torch.equal(outs[i][:, :2], base[i][:, :2])
        assert not torch.equal(outs[i][0, 2:], base[i][0, 2:])
    assert torch.equal(logits[:, :2], base_logits[:, :2])
    assert not torch.equal(logits[0, 2:], base_logits[0, 2:])


def test_rows_whose_vector_is_the_original_are_unchanged(lm):
    ids = torch.tensor([lm.tokenizer.encode("alpha beta gamma delta")] * 2)
    k = 3
    with torch.inference_mode(), record([lm.arch.blocks[k]], inputs=True) as ins:
        base = lm.model(input_ids=ids).logits
    orig = ins[0][-1]
    vec = torch.stack([orig[0, 1], torch.randn(lm.hidden_size) * 3])
    with torch.inference_mode(), inject(lm.arch.blocks[k], [1], vec):
        out = lm.model(input_ids=ids).logits
    assert torch.equal(out[0], base[0])
    assert not torch.equal(out[1], base[1])


def test_strength_mixes_linearly():
    h = torch.randn(2, 5, 4)
    v = torch.randn(2, 4)
    out = overwrite_positions(h, [1, 3], v, strength=0.25)
    assert torch.allclose(out[:, 1], 0.25 * v + 0.75 * h[:, 1])
    assert torch.equal(out[:, [0, 2, 4]], h[:, [0, 2, 4]])
    assert torch.equal(overwrite_positions(h, [2], v)[:, 2], v)


def _hook_counts(module):
    return (len(module._forward_pre_hooks), len(module._forward_hooks))


def test_no_context_adds_or_removes_hooks_on_a_shared_module(lm):
    block = lm.arch.blocks[2]
    with record([block]):  # the module's one pair of dispatching hooks, installed on first use
        pass
    installed = _hook_counts(block)
    seen = []
    ids = torch.tensor([lm.tokenizer.encode("one two three")])
    with torch.inference_mode(), inject(block, [0], torch.zeros(1, lm.hidden_size)), \
            edit_output(block, lambda h, _a: h * 2, variant="double"), record([block], inputs=True):
        seen.append(_hook_counts(block))
        lm.model(input_ids=ids)
        seen.append(_hook_counts(block))
    assert seen == [installed, installed] and _hook_counts(block) == installed


def test_contexts_end_cleanly_on_error(lm):
    block = lm.arch.blocks[3]
    ids = torch.tensor([lm.tokenizer.encode("alpha beta gamma")])
    with torch.inference_mode():
        clean = lm.model(input_ids=ids).logits
    with pytest.raises(RuntimeError), inject(block, [0, 1], torch.randn(1, lm.hidden_size) * 9):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), record([block]) as store:
        raise RuntimeError("boom")
    installed = _hook_counts(block)
    with pytest.raises((TypeError, AttributeError)), record([block, "not a module"]):  # fails while being set up
        pass
    with torch.inference_mode():
        after = lm.model(input_ids=ids).logits
    assert torch.equal(after, clean)  # no injection left behind
    assert store == [[]]  # a finished record() sees no later pass
    assert _hook_counts(block) == installed


def test_hook_contexts_declare_their_model_variant(lm):
    block = lm.arch.blocks[1]
    assert MODEL_VARIANT.get() is None
    with edit_input(block, lambda h: h + 1, variant="plus-one"):
        assert MODEL_VARIANT.get() == "plus-one"
        with edit_output(block, lambda h, _a: h, variant="same"):
            assert MODEL_VARIANT.get() == "plus-one+same"
        with inject(block, [0], torch.zeros(1, lm.hidden_size)), record([block]):
            assert MODEL_VARIANT.get() == "plus-one"  # a reading's own injection is not a variant
    assert MODEL_VARIANT.get() is None
    with pytest.raises(TypeError):
        edit_input(block, lambda h: h)  # the variant must be declared


def test_a_hook_does_not_touch_another_threads_pass(lm):
    ids = torch.tensor([lm.tokenizer.encode("The capital of France is")])
    with torch.inference_mode():
        clean = lm.model(input_ids=ids).logits
    inside = threading.Event()
    release = threading.Event()
    results = {}

    def patched():
        with inject(lm.arch.blocks[1], [0, 1, 2], torch.randn(1, lm.hidden_size) * 10):
            inside.set()
            release.wait(10)
            with torch.inference_mode():
                results["patched"] = lm.model(input_ids=ids).logits

    def plain():
        inside.wait(10)
        for _ in range(3):
            with torch.inference_mode():
                results.setdefault("plain", []).append(lm.model(input_ids=ids).logits)
        release.set()

    ts = [threading.Thread(target=patched), threading.Thread(target=plain)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert all(torch.equal(x, clean) for x in results["plain"])
    assert not torch.allclose(results["patched"], clean)


def test_a_deep_copied_model_applies_each_context_once(tiny):
    import copy

    lm = tiny("llama")
    with record([lm.arch.blocks[1]]):  # dispatchers installed on the original's modules
        pass
    clone = copy.deepcopy(lm.model)
    block = clone.model.layers[1]
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode(), record([block]) as plain:
        clone(input_ids=ids)
    with torch.inference_mode(), edit_output(block, lambda h, _a: h + 1.0, variant="plus-one"), \
            record([block]) as edited:
        clone(input_ids=ids)
    assert len(plain[0]) == 1 and len(edited[0]) == 1
    assert torch.allclose(edited[0][0], plain[0][0] + 1.0)
