"""Concepts on the real embedded model: probes, colouring, GCAV steering, isolation, files, bad input."""

from __future__ import annotations

import json
import math
import re
import threading

import numpy as np
import pytest

from explorer.core.errors import InputError
from explorer.core.grid import capture
from explorer.methods.concepts import (
    Concept,
    ConceptData,
    Steering,
    StepLog,
    Target,
    fit_probe,
    from_lists,
    from_records,
    gcav,
    load_file,
    shipped,
    slsqp,
)
from explorer.methods.concepts.probe import Probe

ROWS = [6, 10]


def small(name: str, train: int = 10, test: int = 4) -> ConceptData:
    """The first prompts of each side and split of a shipped set (keeps the tests short)."""
    data = shipped(name)
    keep, seen = [], {}
    for i, key in enumerate(zip(data.labels, data.splits)):
        cap = train if key[1] == "train" else test
        if seen.get(key, 0) < cap:
            seen[key] = seen.get(key, 0) + 1
            keep.append(i)
    return ConceptData(name, tuple(data.texts[i] for i in keep), tuple(data.labels[i] for i in keep),
                       tuple(data.splits[i] for i in keep), "test")


@pytest.fixture(scope="module")
def sentiment(lm) -> Concept:
    return Concept.train(lm, small("negative_sentiment"), layers=ROWS)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- probes
def test_probe_recovers_the_direction_of_separable_data():
    rng = np.random.default_rng(0)
    d = 24
    u = rng.normal(size=d)
    scales = rng.uniform(0.2, 5.0, size=d)  # anisotropic, offset: the raw-coordinate mapping matters
    offset = rng.normal(size=d) * 10
    x = rng.normal(size=(600, d)) * scales + offset
    margin = (x - offset) @ u / np.linalg.norm(u)
    keep = np.abs(margin) > 0.5  # a clear gap: separable
    x, y = x[keep], (margin[keep] > 0).astype(int)
    probe = fit_probe(3, x[:400], y[:400], x[400:], y[400:], c=100.0)
    cos = probe.w @ u / (np.linalg.norm(probe.w) * np.linalg.norm(u))
    assert cos > 0.95
    assert probe.accuracy == 1.0
    # The boundary passes through the true one: the offset point sits on it.
    assert abs(float(probe.logit(offset[None])[0])) / probe.norm < 0.1


def test_colouring_equals_an_independent_sklearn_probe_on_the_grid(lm, sentiment):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = small("negative_sentiment")
    train = [i for i, s in enumerate(data.splits) if s == "train"]
    grid = capture(lm, "The soup was cold and the waiter was rude.")
    layer = sentiment.colour(grid)
    assert layer.values.shape == (grid.n_rows, grid.n_tokens)
    for row in ROWS:
        x = np.stack([capture(lm, data.texts[i]).hidden[row, -1].double().numpy() for i in train])
        y = np.array([data.labels[i] for i in train])
        p = sentiment.probe(row)  # the C chosen by cross-validation, and the fitted temperature
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=p.c, max_iter=100_000, tol=1e-12)).fit(x, y)
        expected = sigmoid(ref.decision_function(grid.hidden[row].double().numpy()) / p.temperature)
        np.testing.assert_allclose(layer.values[row], expected, atol=2e-4)
        assert f"{layer.values[row, -1]:.3f}" in layer.hover[row][grid.n_tokens - 1]
    others = [r for r in range(grid.n_rows) if r not in ROWS]
    assert np.isnan(layer.values[others]).all()
    # The probe reads the concept: the last token of a negative sentence is more negative than a positive one's.
    pos = sentiment.colour(capture(lm, "The soup was warm and the waiter was lovely."))
    assert layer.values[10, -1] > pos.values[10, -1]


def test_training_sees_the_callers_edit(lm):
    """States are captured in the caller's context: under a steering the probes change."""
    data = small("sports", 8, 2)
    plain = Concept.train(lm, data, layers=[8])
    other = Concept.train(lm, small("negative_sentiment", 8, 2), layers=[4])
    with other.steer_fixed(lm, 2.0, "add", [4]):
        edited = Concept.train(lm, data, layers=[8])
    assert not np.allclose(plain.probe(8).w, edited.probe(8).w)
    assert edited.meta["variant"] and plain.meta["variant"] is None


# ----------------------------------------------------------------------------- GCAV
@pytest.mark.parametrize("mode,quantile", [("remove", 0.3), ("add", 0.7)])
def test_gcav_moves_violating_states_onto_p0_and_leaves_others_bit_identical(lm, sentiment, mode, quantile):
    row = 10
    w, b = sentiment.probe(row).w, sentiment.probe(row).b
    typical = sentiment.probe(row).typical_norm
    prompts = ["The movie was dull and the acting was awful.", "The movie was lovely and the acting superb."]
    # A target inside the range the probe reads on these tokens, so that some states meet it and some miss.
    grids = [capture(lm, p).hidden[row].double().numpy() for p in prompts]
    probs = np.concatenate([sigmoid(g[np.linalg.norm(g, axis=1) <= 8 * typical] @ w + b) for g in grids])
    p0 = float(np.quantile(probs, quantile))
    violated = satisfied = 0
    for prompt in prompts:
        before = capture(lm, prompt).hidden[row].double().numpy()
        with sentiment.steer(lm, mode, p0=p0, layers=[row]) as log:
            after = capture(lm, prompt).hidden[row].double().numpy()
        assert log.records() and log.records()[0]["layer"] == row
        p_before = sigmoid(before @ w + b)
        p_after = sigmoid(after @ w + b)
        for t in range(before.shape[0]):
            if np.linalg.norm(before[t]) > 8 * typical:  # the attention sink is left alone by design
                assert np.array_equal(before[t], after[t])
                continue
            miss = p_before[t] > p0 if mode == "remove" else p_before[t] < p0
            if miss:
                violated += 1
                assert abs(p_after[t] - p0) < 1e-4
                step = after[t] - before[t]  # moved along w only
                assert abs(step @ w) / (np.linalg.norm(step) * np.linalg.norm(w)) > 0.999
            else:
                satisfied += 1
                assert np.array_equal(before[t], after[t])
    assert violated > 0 and satisfied > 0


def test_gcav_acts_on_prefill_and_every_decoding_step(lm, sentiment):
    from explorer.core.generation import greedy_text

    prompt = "The hotel room was dirty and the staff were"
    before = greedy_text(lm, prompt, max_new_tokens=8, chat=False)
    with sentiment.steer(lm, "remove", p0=1e-6, layers=ROWS) as log:
        greedy_text(lm, prompt, max_new_tokens=8, chat=False)
    steps = [r for r in log.records() if r["layer"] == ROWS[0]]
    assert len(steps) >= 8 and steps[0]["positions"] > 1 and steps[1]["positions"] == 1
    assert any(r["eps"][0][0] < 0 for r in steps)  # removing: a step against v
    assert greedy_text(lm, prompt, max_new_tokens=8, chat=False) == before  # nothing left behind


def test_slsqp_meets_every_target_at_the_least_total_eps():
    from scipy.optimize import linprog

    rng = np.random.default_rng(1)
    d = 16
    probes = [Probe(1, rng.normal(size=d), float(rng.normal()), 1, 1, 1, 10.0) for _ in range(2)]
    e = rng.normal(size=d) * 3
    p0s, modes = [0.9, 0.2], ["add", "remove"]
    eps = slsqp(e, probes, p0s, modes)
    moved = e + sum(ei * p.vector for ei, p in zip(eps, probes))
    s0 = [math.log(p / (1 - p)) for p in p0s]
    assert probes[0].logit(moved[None])[0] >= s0[0] - 1e-6
    assert probes[1].logit(moved[None])[0] <= s0[1] + 1e-6
    # Independent reference: the same problem as a linear programme (eps = p - n).
    g = np.array([[p.w @ q.vector for q in probes] for p in probes])
    base = np.array([p.w @ e + p.b for p in probes])
    a = np.array([[-g[0, 0], -g[0, 1], g[0, 0], g[0, 1]], [g[1, 0], g[1, 1], -g[1, 0], -g[1, 1]]])
    ub = np.array([base[0] - s0[0], s0[1] - base[1]])
    ref = linprog(np.ones(4), A_ub=a, b_ub=ub, bounds=[(0, None)] * 4)
    assert abs(np.abs(eps).sum() - ref.fun) < 1e-5


def test_a_sessions_concept_steering_is_invisible_to_another(lm, sentiment):
    from explorer.api import Explorer
    from explorer.ui.session import Session

    ex = Explorer(lm)
    grid = ex.run("The weather is lovely today")
    cell = [(8, 3)]
    settings = ex.settings("refers_to", max_new_tokens=10)
    steer = Steering((sentiment,), ("add",), (1 - 1e-6,), tuple(ROWS))
    plain_ref = ex.interpret(grid, cell, settings=settings, relevancy=False).cells[0].interpretation
    with steer.context(lm):
        steered_ref = Explorer(lm).interpret(grid, cell, settings=settings, relevancy=False).cells[0].interpretation
    assert plain_ref != steered_ref
    a, b = Session(), Session()
    a.concept_steer = steer
    out: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def work(name: str, session: Session) -> None:
        barrier.wait()
        with session.job_context(lm):
            out[name] = ex.interpret(grid, cell, settings=settings, relevancy=False).cells[0].interpretation

    threads = [threading.Thread(target=work, args=("a", a)), threading.Thread(target=work, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {"a": steered_ref, "b": plain_ref}


# ----------------------------------------------------------------------------- files
def test_save_and_load_round_trip(lm, sentiment, tmp_path):
    path = sentiment.save(tmp_path / "c.safetensors", extra={"steer": {"mode": "remove", "p0": 0.1, "layers": [10]}})
    raw = path.read_bytes()
    assert b"pickle" not in raw[:200]
    back = Concept.load(path, lm)
    assert back.layers == ROWS and back.name == sentiment.name
    for r in ROWS:
        assert np.array_equal(back.probe(r).w, sentiment.probe(r).w)
        assert back.probe(r).accuracy == sentiment.probe(r).accuracy
    assert back.meta["texts"] == list(small("negative_sentiment").texts)
    sentiment.save(tmp_path / "half.safetensors", extra={"steer": {"mode": "remove"}})  # no p0, no layers
    with pytest.raises(InputError, match="p0 = None"):
        Concept.load(tmp_path / "half.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(InputError, match="not a readable concept file"):
        Concept.load(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- bad input
def test_bad_examples_get_one_sentence(tmp_path):
    pos = [f"good thing number {i}" for i in range(12)]
    neg = [f"bad thing number {i}" for i in range(12)]
    with pytest.raises(InputError) as e:  # 6 and 6 typed: every 4th held out gives 5 to train and 1 held out
        from_lists("x", pos[:6], neg[:6])
    message = str(e.value)
    assert "10 per side" in message and "got 6 with the concept (5 to train, 1 held out)" in message
    assert "6 without (5 to train, 1 held out)" in message and "got 5" not in message
    with pytest.raises(InputError, match=re.escape("got 12 with the concept (12 to train, 0 held out)")):
        from_records("x", [{"text": t, "label": 1, "split": "train"} for t in pos]
                     + [{"text": t, "label": 0, "split": "train"} for t in neg])
    with pytest.raises(InputError, match="one class only"):
        from_lists("x", pos, [])
    with pytest.raises(InputError, match="empty"):
        from_lists("x", [*pos, "  "], neg)
    with pytest.raises(InputError, match="appears twice"):
        from_lists("x", [*pos, pos[0]], neg)
    csv = tmp_path / "nolabel.csv"
    csv.write_text("text,kind\nhello,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'label' column"):
        load_file(csv)
    ok = tmp_path / "ok.jsonl"
    ok.write_text("\n".join(json.dumps({"text": t, "label": int(i < 12)}) for i, t in enumerate(pos + neg)))
    assert load_file(ok).counts() == {"train_pos": 9, "train_neg": 9, "test_pos": 3, "test_neg": 3}


def test_bad_steering_settings_get_one_sentence(lm, sentiment):
    for p0 in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(InputError, match="strictly between 0 and 1"):
            Target("x", sentiment.probes, "remove", p0)
    with pytest.raises(InputError, match="out of range"), gcav(lm, [sentiment.target("remove", 0.1)], [31]):
        pass
    with pytest.raises(InputError, match="no probe at layer 3"), sentiment.steer(lm, "remove", p0=0.1, layers=[3]):
        pass
    with pytest.raises(InputError, match="out of range"):
        Concept.train(lm, small("sports", 8, 2), layers=[99])


def test_cli_train_colour_steer_and_errors(tmp_path, capsys):
    from explorer.tools.cli import main

    data = small("question", 8, 2)
    csv = tmp_path / "q.csv"
    data.to_frame().to_csv(csv, index=False)
    out = tmp_path / "q.safetensors"
    assert main(["concept", "train", "--file", str(csv), "--layers", "4,8", "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trained 'q' on 20 prompts x 2 rows" in text and out.is_file()
    assert main(["concept", "colour", "--load", str(out), "--prompt", "Where is the station?"]) == 0
    assert "P" not in capsys.readouterr().err
    assert main(["concept", "steer", "--load", str(out), "--layers", "8", "--max-new-tokens", "4", "--k", "3"]) == 0
    steer = json.loads(capsys.readouterr().out)
    assert steer["p0"] == pytest.approx(1e-3) and steer["eps_per_step"]
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n", encoding="utf-8")
    assert main(["concept", "train", "--file", str(bad)]) == 2
    assert "error: 'bad.csv' has no 'label' column" in capsys.readouterr().err
    assert main(["concept", "steer", "--load", str(out), "--layers", "8", "--p0", "1.5"]) == 2
    assert main(["concept", "steer", "--load", str(out), "--layers", "40"]) == 2
    err = capsys.readouterr().err
    assert "strictly between 0 and 1" in err and "out of range" in err and "Traceback" not in err


def test_concept_eval_quick_prints_its_figures(capsys):
    from explorer.tools.cli import main

    assert main(["concept-eval", "--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    for key in ("base_success", "best_fixed_success", "gcav_success", "base_ppl", "best_fixed_ppl", "gcav_ppl"):
        assert key in report
    assert set(report["probe_best_acc"]) == {"formality", "negative_sentiment", "question", "sports"}
    assert all(0.5 < v <= 1.0 for v in report["probe_best_acc"].values())
    assert all(0.0 <= v < 0.5 for v in report["probe_best_ece"].values())
    assert any("best layer" in ln for ln in lines)
    real = report["real"]
    gcav = real["table"]["gcav"]
    for key in ("vader_ci", "afinn_ci", "vader_lift_ci", "afinn_lift_ci", "ppl_ratio_ci"):
        lo, hi = gcav[key]
        assert lo <= hi
    assert gcav["vader_ci"][0] <= gcav["vader_positive"] <= gcav["vader_ci"][1]
    assert set(real["targets"]) == {"lift_vader_0.25", "lift_afinn_0.25", "ppl_within_1.2x", "beats_matched_fixed"}
    assert 0.0 <= real["judge_agreement"]["agreement"] <= 1.0
    assert real["chosen"]["layers"] and 0 < real["chosen"]["p0"] < 1
    assert real["multi_concept"]["held"]["largest_step_ratio"] > 0
    assert any("Held-out test" in ln for ln in lines)


# ----------------------------------------------------------------------------- several concepts
@pytest.fixture(scope="module")
def formality(lm) -> Concept:
    return Concept.train(lm, small("formality"), layers=[10])


def test_several_concepts_hold_one_at_its_p0_while_another_moves(lm, sentiment, formality):
    """Sentiment is removed (P <= 0.05) while formality is held at its unsteered level: an add and a
    remove target at the same p0, solved together by SLSQP. The log's largest step equals the largest
    state change measured in the grids, over the typical norm."""
    row, prompt = 10, "The waiter was rude and the soup was cold"
    s_probe, f_probe = sentiment.probe(row), formality.probe(row)
    before = capture(lm, prompt).hidden[row].double().numpy()
    pf = float(f_probe.prob(before[-1:])[0])
    assert s_probe.prob(before[-1:])[0] > 0.05  # sentiment has to move
    with sentiment.steer(lm, "remove", p0=0.05, layers=[row]):
        alone = capture(lm, prompt).hidden[row].double().numpy()
    drift = abs(float(f_probe.prob(alone[-1:])[0]) - pf)
    both = Steering((sentiment, formality, formality), ("remove", "add", "remove"), (0.05, pf, pf), (row,))
    log = StepLog()
    with both.context(lm, log):
        held = capture(lm, prompt).hidden[row].double().numpy()
    assert float(s_probe.prob(held[-1:])[0]) <= 0.05 + 1e-6
    assert abs(float(f_probe.prob(held[-1:])[0]) - pf) < 0.05
    assert abs(float(f_probe.prob(held[-1:])[0]) - pf) < drift  # holding changed something
    steps = np.linalg.norm(held - before, axis=1)
    typical = max(s_probe.typical_norm, f_probe.typical_norm)
    record = log.records()[0]
    assert record["layer"] == row and record["max_ratio"] == pytest.approx(steps.max() / typical, rel=1e-5)
    assert len(record["eps"]) == 3


def test_cli_steers_several_concepts_and_reports_a_solver_failure(tmp_path, capsys, sentiment, formality):
    from explorer.tools.cli import main

    a = sentiment.save(tmp_path / "s.safetensors")
    b = formality.save(tmp_path / "f.safetensors")
    assert main(["concept", "steer", "--load", str(a), str(b), "--mode", "remove,remove", "--p0", "0.05,0.5",
                 "--layers", "10", "--max-new-tokens", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["concepts"] == ["negative_sentiment", "formality"] and out["p0s"] == [0.05, 0.5]
    assert all(len(r["eps_last"]) == 2 for r in out["eps_per_step"]) and out["largest_step_ratio"] > 0
    # The same concept pushed above 0.9 and below 0.1 at once: no solution, one sentence, exit 2.
    assert main(["concept", "steer", "--load", str(a), str(a), "--mode", "add,remove", "--p0", "0.9,0.1",
                 "--layers", "10", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "no step that meets every target" in err and "Traceback" not in err
    assert main(["concept", "steer", "--load", str(a), str(b), "--p0", "0.1,0.2,0.3", "--layers", "10"]) == 2
    assert "3 values for 2 concepts" in capsys.readouterr().err


# ----------------------------------------------------------------------------- GCAV-Output and the sweep
def test_gcav_output_labels_the_models_own_continuations_by_the_judge(lm):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from explorer.methods.concepts.output import output_examples
    from explorer.methods.concepts.reviews import openings

    prompts = openings("train", False, 100) + openings("train", True, 20)  # enough negative continuations
    data = output_examples(lm, prompts, max_new_tokens=10, seed=1)
    sia = SentimentIntensityAnalyzer()
    for text, label in zip(data.texts, data.labels):
        prompt = next(p for p in prompts if text.startswith(p))
        score = sia.polarity_scores(text[len(prompt):])["compound"]
        assert abs(score) >= 0.05 and label == int(score <= -0.05)  # neutral ones are dropped
    assert set(data.labels) == {0, 1} and len(data.texts) < len(prompts)


def test_cli_sweep_saves_the_chosen_layers_and_steer_uses_them(tmp_path, capsys, sentiment):
    from explorer.tools.cli import main

    path = sentiment.save(tmp_path / "s.safetensors")
    prompts = tmp_path / "p.txt"
    prompts.write_text("The soup was cold and\nThe staff were rude and\n", encoding="utf-8")
    out = tmp_path / "chosen.safetensors"
    args = ["concept", "sweep", "--load", str(path), "--prompts", str(prompts), "--quick", "--max-new-tokens", "4",
            "--save", str(out)]
    assert main([*args, "--budget", "0.01"]) == 2  # nothing can be that fluent: one sentence, nothing saved
    assert "No layer group kept the perplexity within 0.01" in capsys.readouterr().err and not out.exists()
    # This tiny concept (10 prompts a side) moves text hard; a loose budget lets every point in.
    assert main([*args, "--budget", "1e12"]) == 0
    assert out.is_file() and "chosen rows" in capsys.readouterr().out
    back = Concept.load(out)
    choice = back.meta["layer_choice"]
    assert back.default_layers() == choice["layers"] and set(choice["layers"]) <= set(ROWS)
    assert main(["concept", "steer", "--load", str(out), "--max-new-tokens", "2"]) == 0
    steered = json.loads(capsys.readouterr().out)
    assert steered["rows"] == choice["layers"] and steered["p0"] == choice["p0"]
