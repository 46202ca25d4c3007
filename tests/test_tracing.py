"""Causal tracing: exact identities of restoration, a plain unbatched reference, seeds, inputs, outputs, CLI."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from explorer.core.data import CORPUS
from explorer.core.errors import InputError
from explorer.core.grid import capture_ids
from explorer.core.hooks import edit_input, edit_output, record
from explorer.methods.tracing import CausalTrace, TraceSettings, embedding_std, guess_subject, setup, trace
from explorer.methods.tracing.engine import draw_noise
from explorer.methods.tracing.facts import region_means
from explorer.tools.cli import main

PROMPT = "The Eiffel Tower is in the city of"
ANSWER = " Paris"


def ids_of(lm, text=PROMPT):
    return lm.tokenizer.encode(text, add_special_tokens=True)


def naive_p(lm, ids, answer_id, positions, noise, row, token, *, mlp_window=None):
    """p(answer) with one cell restored, averaged over the noise samples, written plainly: one unbatched
    forward pass of the whole model per sample, the noise added at block 0's input, the clean state written
    at row ``row`` (the input of block ``row``; the last block's output for the last row), and the model's
    own logits. With ``mlp_window``, the clean MLP outputs of those blocks are written at ``token`` instead."""
    blocks = lm.arch.blocks
    x = torch.tensor([ids])
    clean = capture_ids(lm, ids).hidden  # its own clean pass
    with torch.inference_mode(), record(lm.arch.mlps) as mlp_out:
        lm.model(input_ids=x, use_cache=False)
    probs = []
    for s in range(noise.shape[0]):
        def corrupt(h, s=s):
            h = h.clone()
            h[0, positions] += noise[s]
            return h

        def put(h):
            h = h.clone()
            h[0, token] = clean[row, token]
            return h

        with torch.inference_mode(), edit_input(blocks[0], corrupt, variant=None):
            if mlp_window is not None:
                with contextlib.ExitStack() as stack:
                    for i in mlp_window:
                        def put_mlp(out, _args, i=i):
                            out = out.clone()
                            out[0, token] = mlp_out[i][-1][0, token]
                            return out
                        stack.enter_context(edit_output(lm.arch.mlps[i], put_mlp, variant=None))
                    logits = lm.model(input_ids=x, use_cache=False).logits[0, -1]
            elif row < len(blocks):
                with edit_input(blocks[row], put, variant=None):
                    logits = lm.model(input_ids=x, use_cache=False).logits[0, -1]
            else:
                with edit_output(blocks[-1], lambda out, _a: put(out), variant=None):
                    logits = lm.model(input_ids=x, use_cache=False).logits[0, -1]
        probs.append(float(torch.softmax(logits.double(), -1)[answer_id]))
    return float(np.mean(probs))


@pytest.fixture(scope="module")
def eiffel(lm):
    """The prepared passes of the Eiffel Tower prompt (3 noise samples)."""
    return setup(lm, ids_of(lm), ANSWER, settings=TraceSettings(samples=3))[0]


def test_restoring_all_corrupted_embeddings_gives_p_clean(eiffel):
    run = eiffel
    assert run.positions == [1, 2, 3]  # " E", "iffel", " Tower"
    assert run.p_clean > 0.5 and run.p_corrupted < run.p_clean - 0.3  # the noise really removes the answer
    (p,) = run.restore([(0, tuple(run.positions))])
    assert abs(p - run.p_clean) < 1e-6
    # one subject token alone does not bring it all back
    (q,) = run.restore([(0, (3,))])
    assert abs(q - run.p_clean) > 0.1


def test_restoring_before_the_first_corrupted_token_gives_p_corrupted(eiffel):
    run = eiffel
    cells = [(row, (0,)) for row in (0, 1, 7, 15, 29, 30)]
    p = run.restore(cells)
    assert np.all(np.abs(p - run.p_corrupted) < 1e-6)
    # ... while restoring a corrupted token does change it
    assert abs(run.restore([(7, (2,))])[0] - run.p_corrupted) > 0.1


def test_the_whole_trace_keeps_those_identities(lm):
    tr = trace(lm, PROMPT, "Paris", samples=2)
    assert tr.answer == ANSWER and tr.answer_token == " Paris" and tr.subject == "Eiffel Tower"
    assert tr.effect.shape == (lm.n_layers + 1, len(ids_of(lm)))
    assert np.all(tr.effect[:, 0] == 0)  # before the subject nothing can change
    last = lm.n_layers
    # the last row at the last token is the clean output; elsewhere it cannot reach the prediction (float tolerance
    # of the same path: the batch sizes differ)
    assert abs(tr.effect[last, -1] - tr.total_effect) < 1e-6
    assert np.all(np.abs(tr.effect[last, :-1]) < 1e-6)
    p_clean = torch.softmax(lm.model(input_ids=torch.tensor([ids_of(lm)])).logits[0, -1].double(), -1)
    assert abs(tr.p_clean - float(p_clean[lm.tokenizer.encode(ANSWER, add_special_tokens=False)[0]])) < 1e-6


def test_batched_restoration_equals_one_plain_pass_per_cell_on_the_real_model(lm, eiffel):
    run = eiffel
    noise = draw_noise(run.settings, len(run.positions), lm.hidden_size, run.noise_std)
    cells = [(0, 3), (5, 2), (12, 2), (20, 8), (29, 8), (30, 8), (30, 4)]
    batched = run.restore([(r, (t,)) for r, t in cells])
    plain = [naive_p(lm, run.ids, run.answer_id, run.positions, noise, r, t) for r, t in cells]
    np.testing.assert_allclose(batched, plain, rtol=0, atol=2e-6)
    assert np.ptp(plain) > 0.3  # the cells really differ


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "phi3", "gpt_neox", "qwen2", "mistral"])
def test_batched_restoration_equals_plain_passes_on_tiny_models(tiny, arch):
    lm = tiny(arch)
    ids = ids_of(lm)
    answer_id = int(lm.tokenizer.encode(" Paris", add_special_tokens=False)[0])
    run, *_ = setup(lm, ids, " Paris", settings=TraceSettings(samples=2, noise=30.0))
    noise = draw_noise(run.settings, len(run.positions), lm.hidden_size, run.noise_std)
    cells = [(r, t) for r in range(lm.n_layers + 1) for t in range(len(ids))]
    batched = run.restore([(r, (t,)) for r, t in cells])
    plain = np.array([naive_p(lm, ids, answer_id, run.positions, noise, r, t) for r, t in cells])
    np.testing.assert_allclose(batched, plain, rtol=2e-5, atol=0)
    assert np.ptp(plain) / plain.mean() > 1e-3  # restoring changes p well beyond the tolerance


def test_mlp_window_restoration_equals_plain_passes(tiny):
    lm = tiny("llama")
    ids = ids_of(lm)
    answer_id = int(lm.tokenizer.encode(" Paris", add_special_tokens=False)[0])
    run, *_ = setup(lm, ids, " Paris", settings=TraceSettings(samples=2, noise=30.0, kind="mlp", window=2))
    noise = draw_noise(run.settings, len(run.positions), lm.hidden_size, run.noise_std)
    for row, token, blocks in [(1, 2, [0]), (2, 3, [0, 1]), (3, 8, [1, 2])]:
        window = run.window(row)
        assert list(window) == blocks  # two blocks ending at the one that wrote the row (clipped at block 0)
        (batched,) = run.restore([(row, (token,))])
        plain = naive_p(lm, ids, answer_id, run.positions, noise, row, token, mlp_window=window)
        assert abs(batched - plain) < 2e-5 * plain


def test_noise_scale_is_the_embeddings_std(lm):
    ids = lm.tokenizer.encode(CORPUS.read_text(encoding="utf-8"), add_special_tokens=True)[:512]
    row0 = capture_ids(lm, ids).hidden[0]
    assert abs(embedding_std(lm) - float(row0.std())) < 1e-6
    noise = draw_noise(TraceSettings(samples=50, noise=3.0), 4, lm.hidden_size, 0.5)
    assert noise.shape == (50, 4, lm.hidden_size) and abs(float(noise.std()) - 1.5) < 0.02


def test_seeded_traces_repeat_and_seeds_differ(lm):
    def run(seed):
        r = setup(lm, ids_of(lm), ANSWER, settings=TraceSettings(samples=2, seed=seed))[0]
        return r.p_corrupted_samples, r.restore([(6, (2,)), (20, (8,))])

    (a_corr, a_cells), (b_corr, b_cells), (c_corr, c_cells) = run(7), run(7), run(8)
    assert np.array_equal(a_corr, b_corr) and np.array_equal(a_cells, b_cells)
    assert not np.array_equal(a_corr, c_corr) and not np.array_equal(a_cells, c_cells)


def test_subject_is_found_by_text_or_guessed(lm):
    from explorer.methods.tracing import subject_positions

    tok = lm.tokenizer
    assert guess_subject("The Eiffel Tower is in the city of") == "Eiffel Tower"
    assert guess_subject("Where is Paris? It is in") == "Paris"
    assert guess_subject("Michael Jordan plays the sport of") == "Michael Jordan"
    assert guess_subject("at room temperature, water is") is None
    assert subject_positions(tok, ids_of(lm), "eiffel tower") == ("eiffel tower", [1, 2, 3])
    ids = ids_of(lm, "At room temperature, the phase of matter of water is")
    _, pos = subject_positions(tok, ids, "water")
    assert [tok.decode([ids[i]]) for i in pos] == [" water"]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"subject": "Louvre"}, "does not occur in the prompt"),
    ({"prompt": "at room temperature, water is"}, "No subject was found"),
    ({"answer": "  "}, "The answer is empty"),
    ({"samples": 0}, "noise samples must be from 1"),
    ({"noise": float("nan")}, "noise level must be a number"),
    ({"kind": "attention"}, "Unknown trace kind"),
    ({"prompt": "The Eiffel Tower " + "and more words " * 40}, "positions"),
])
def test_bad_input_gets_one_sentence(lm, kwargs, words):
    args = {"prompt": PROMPT, "answer": ANSWER, **kwargs}
    with pytest.raises(InputError) as e:
        trace(lm, args.pop("prompt"), args.pop("answer"), args.pop("subject", None), **args)
    message = str(e.value)
    assert words in message and message.count(". ") <= 1 and "\n" not in message


def test_trace_serialises_to_frame_csv_and_json(lm, tmp_path):
    tr = trace(lm, PROMPT, ANSWER, samples=1)
    frame = tr.to_frame()
    assert len(frame) == tr.n_rows * tr.n_tokens
    row = frame[(frame.layer == 10) & (frame.token == 2)].iloc[0]
    assert row.effect == tr.effect[10, 2] and row.p_restored == tr.effect[10, 2] + tr.p_corrupted and row.subject
    data = json.loads(tr.to_json(tmp_path / "t.json"))
    assert np.array_equal(np.array(data["effect"]), tr.effect) and data["p_clean"] == tr.p_clean
    assert data["subject_positions"] == [1, 2, 3] and data["samples"] == 1 and data["provenance"]["model_id"]
    text = tr.to_csv(tmp_path / "t.csv")
    assert text.count("\n") == tr.n_rows * tr.n_tokens + 1 and "p_corrupted" in text.splitlines()[0]
    fig = tr.figure()
    assert fig["data"][0]["z"][10][2] == tr.effect[10, 2] and "p_clean" in fig["data"][0]["colorbar"]["title"]["text"]


def test_region_means_over_hand_made_effects():
    effect = np.arange(5 * 4, dtype=float).reshape(5, 4)  # rows 0..4, tokens 0..3
    tr = CausalTrace("p", (1, 2, 3, 4), ("a", "b", "c", "d"), " x", (9,), " x", "b", (1,), effect, 1.0, 0.0,
                     TraceSettings(samples=1), 0.1)
    means = region_means(tr)
    # lower half = rows 0..2 at token 1: 1, 5, 9; upper half = rows 3..4 at token 3: 15, 19
    assert means["subject_last_lower"] == 5.0 and means["last_token_upper"] == 17.0
    others = [v for (r, t), v in np.ndenumerate(effect) if not (t == 1 and r <= 2) and not (t == 3 and r >= 3)]
    assert means["other"] == float(np.mean(others))


def test_cli_trace_prints_the_grid_and_writes_it(capsys, tmp_path):
    out = tmp_path / "trace.json"
    assert main(["trace", "--prompt", PROMPT, "--answer", "Paris", "--samples", "1", "--every", "10",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "p_clean" in printed and "'iffel'*" in printed and "   30 " in printed
    assert np.array(json.loads(out.read_text())["effect"]).shape == (31, 9)


@pytest.mark.parametrize(("argv", "words"), [
    (["--subject", "Louvre"], "does not occur"),
    (["--samples", "0"], "noise samples"),
    (["--out", "x.txt"], "--out must end in .csv or .json"),
    (["--every", "0"], "--every"),
])
def test_cli_trace_bad_input_exits_2(capsys, argv, words):
    assert main(["trace", "--prompt", PROMPT, "--answer", "Paris", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and words in err[-1] and "Traceback" not in "\n".join(err)


def test_trace_eval_quick_prints_the_table_and_json(capsys):
    assert main(["trace-eval", "--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert set(last) == {"facts", "subject_last_lower", "last_token_upper", "other", "seconds"}
    assert last["facts"] == 3 and all(np.isfinite(last[k]) for k in last)
    assert any("(a) subject's last token" in line for line in lines)


def test_compare_diffs_two_prompts_traces(tiny):
    from explorer.api import Explorer
    from explorer.methods.compare import compare_prompts

    lm = tiny("llama")  # the plumbing of Compare; the traces themselves are checked on the real model above
    ex = Explorer(lm)
    one = TraceSettings(samples=1)
    b_prompt = "The Colosseum is in the city of"
    cmp = compare_prompts(ex, PROMPT, b_prompt, [1, 3], ex.settings(max_new_tokens=2), colouring="causal",
                          answers=(ANSWER, " Rome"), trace_settings=one)
    ta, tb = trace(lm, PROMPT, ANSWER, settings=one), trace(lm, b_prompt, " Rome", settings=one)
    assert np.abs(ta.effect).max() > 0 and np.abs(tb.effect).max() > 0
    assert cmp.traces is not None and np.array_equal(cmp.traces[0].effect, ta.effect)
    assert np.array_equal(cmp.traces[1].effect, tb.effect) and cmp.traces[1].subject == "Colosseum"
    for i, layer in enumerate([1, 3]):
        for j, (a, b) in enumerate(cmp.pairs):
            assert cmp.causal[i, j] == ta.effect[layer, a] - tb.effect[layer, b]
    fig = cmp.figure()
    assert fig["data"][0]["name"] == "causal effect, A minus B" and "clean" in fig["layout"]["title"]["text"]
    assert "causal_a_minus_b" in cmp.rows()[0]
    with pytest.raises(InputError, match="needs the answer"):
        compare_prompts(ex, PROMPT, b_prompt, [1], ex.settings(max_new_tokens=2), colouring="causal")


def test_replay_reruns_a_block_bit_identically(lm):
    from explorer.core.hooks import record_calls, replay

    block = lm.arch.blocks[7]
    with torch.inference_mode(), record_calls([block]) as calls, record([block]) as outs:
        lm.model(input_ids=torch.tensor([ids_of(lm)]), use_cache=False)
    args, kwargs = calls[0][-1]
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    with torch.inference_mode():
        again = replay(block, calls[0][-1], hidden)
        doubled = replay(block, calls[0][-1], torch.cat([hidden, hidden]))  # a batch of 2 on a call recorded with 1
    assert torch.equal(again, outs[0][-1])
    assert torch.allclose(doubled[1], outs[0][-1][0], atol=1e-5, rtol=0)


def test_compare_tab_reads_answers_as_a_pair():
    from explorer.ui.study_tabs import _pair

    assert _pair("answers", "Paris") == ("Paris", "Paris")
    assert _pair("answers", " Paris | Rome ") == ("Paris", "Rome")
    assert _pair("answers", "  ") is None
    with pytest.raises(InputError, match="split by one"):
        _pair("answers", "Paris | Rome | Oslo")
