"""Calibrated probes, the judges, the matched-perplexity comparison and the real review data: checked
against independent references (scikit-learn, scipy, hand computations), without the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer.core.errors import EditError
from explorer.methods.concepts import fit_probe, slsqp
from explorer.methods.concepts.calibration import (
    C_GRID,
    calibrated_logistic,
    expected_calibration_error,
    newton_logistic,
    stratified_folds,
)
from explorer.methods.concepts.probe import Probe


def _data(seed: int = 0, n: int = 80, d: int = 40, gap: float = 1.0):
    rng = np.random.default_rng(seed)
    y = np.array([1] * (n // 2) + [0] * (n - n // 2))
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + np.outer(y, rng.normal(size=d)) * gap
    return x, y


@pytest.mark.parametrize("c", [0.01, 1.0, 50.0])
def test_newton_solver_equals_sklearn_logistic_regression(c):
    from sklearn.linear_model import LogisticRegression

    x, y = _data(1, n=60, d=90)  # n < d: separable, the case that matters
    z = (x - x.mean(0)) / x.std(0)
    theta = newton_logistic(z, y, c)
    ref = LogisticRegression(C=c, max_iter=100_000, tol=1e-12).fit(z, y)
    np.testing.assert_allclose(theta[:-1], ref.coef_[0], rtol=2e-4, atol=1e-6 * np.abs(ref.coef_).max())
    assert theta[-1] == pytest.approx(ref.intercept_[0], abs=1e-4 * max(1.0, abs(ref.intercept_[0])))
    # Class-balanced weights equal sklearn's class_weight="balanced" on an unbalanced set.
    keep = np.r_[0:30, 30:40]
    wts = np.where(y[keep] == 1, 40 / 60, 40 / 20)
    theta_w = newton_logistic(z[keep], y[keep], c, wts)
    ref_w = LogisticRegression(C=c, max_iter=100_000, tol=1e-12, class_weight="balanced").fit(z[keep], y[keep])
    np.testing.assert_allclose(theta_w[:-1], ref_w.coef_[0], rtol=2e-4, atol=1e-6 * np.abs(ref_w.coef_).max())


def test_regularisation_is_chosen_by_cross_validated_log_loss():
    """The chosen C is the grid value whose out-of-fold predictions (sklearn on the same folds, after the
    best temperature found by scipy) have the lowest log-loss."""
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    x, y = _data(2, n=60, d=100, gap=0.6)
    z = (x - x.mean(0)) / x.std(0)
    fit = calibrated_logistic(z, y)
    folds = stratified_folds(y, 4)
    scores = []
    for c in C_GRID:
        oof = np.zeros(len(y))
        for part in folds:
            train = np.setdiff1d(np.arange(len(y)), part)
            m = LogisticRegression(C=c, max_iter=100_000, tol=1e-12).fit(z[train], y[train])
            oof[part] = m.decision_function(z[part])

        def loss(a, oof=oof):
            return float(np.mean(np.logaddexp(0, a * oof) - y * a * oof))

        scores.append(minimize_scalar(loss, bounds=(0.05, 4.0), method="bounded").fun)
    assert fit.c == C_GRID[int(np.argmin(scores))]
    assert fit.cv_log_loss == pytest.approx(min(scores), rel=1e-3)
    assert fit.c < 1.0  # 60 examples in 100 dimensions: C = 1 would over-fit


def test_calibrated_probe_beats_c_1_on_held_out_log_loss_when_the_signal_is_weak():
    """120 examples in 120 dimensions with a weak signal (held-out AUC about 0.7): C = 1 separates the
    training set and is over-confident; the C chosen by cross-validation has a smaller ||w|| (a larger
    GCAV step) and a lower held-out log-loss. (With a strong signal the temperature sharpens instead,
    and ||w|| can grow: docs/concepts.md.)"""
    x, y = _data(3, n=200, d=120, gap=0.2)
    tr, te = np.r_[0:60, 100:160], np.r_[60:100, 160:200]
    loose = fit_probe(5, x[tr], y[tr], x[te], y[te], c=1.0, calibrate=False)
    tuned = fit_probe(5, x[tr], y[tr], x[te], y[te])
    assert loose.train_accuracy == 1.0  # separable
    assert tuned.norm < loose.norm / 2
    assert tuned.log_loss < loose.log_loss
    assert tuned.ece < loose.ece


def test_expected_calibration_error_by_hand():
    y = np.array([1, 0, 1, 1, 0])
    p = np.array([0.95, 0.92, 0.55, 0.45, 0.05])
    # bins: [0.9,1.0]: p .95,.92 -> mean .935, freq .5; [0.5,0.6): .55 -> 1; [0.4,0.5): .45 -> 1; [0,0.1): .05 -> 0
    expected = 2 / 5 * abs(0.935 - 0.5) + 1 / 5 * abs(0.55 - 1) + 1 / 5 * abs(0.45 - 1) + 1 / 5 * abs(0.05 - 0)
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_mean_difference_probe_follows_the_class_means():
    from sklearn.linear_model import LogisticRegression

    x, y = _data(4, n=80, d=30, gap=0.4)
    p = fit_probe(2, x[:60], y[:60], x[60:], y[60:], kind="mean-difference")
    diff = x[:60][y[:60] == 1].mean(0) - x[:60][y[:60] == 0].mean(0)
    assert np.allclose(p.vector, diff / np.linalg.norm(diff))
    q = x[:60] @ p.vector
    mu, sd = q.mean(), q.std()
    ref = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-12, max_iter=10_000).fit(((q - mu) / sd)[:, None],
                                                                                            y[:60])
    a = ref.coef_[0, 0] / sd
    assert p.norm == pytest.approx(abs(a), rel=1e-4)
    assert p.b == pytest.approx(ref.intercept_[0] - a * mu, rel=1e-4, abs=1e-5)


def test_slsqp_failure_is_an_error_not_a_silent_fallback():
    """Contradictory targets (the same probe pushed above 0.9 and below 0.1) have no solution: one
    sentence, never the per-concept closed forms in its place."""
    rng = np.random.default_rng(5)
    probe = Probe(1, rng.normal(size=8), 0.0, 1, 1, 1, 10.0)
    with pytest.raises(EditError, match="no step that meets every target"):
        slsqp(rng.normal(size=8), [probe, probe], [0.9, 0.1], ["add", "remove"])


def test_judges_agreement_and_bootstrap():
    from sklearn.metrics import cohen_kappa_score

    from explorer.methods.concepts.judges import agreement, bootstrap_ci, judge

    v = judge(["What a wonderful, lovely day.", "This is awful and I hate it.", "The box is on the table."])
    assert v.vader_positive.tolist() == [True, False, False] and v.afinn_positive.tolist() == [True, False, False]
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    got = agreement(a, b)
    assert got["agreement"] == pytest.approx(6 / 8) and got["kappa"] == pytest.approx(cohen_kappa_score(a, b))
    x = np.array([0.0] * 30 + [1.0] * 10)
    lo, hi = bootstrap_ci(x)
    assert lo < 0.25 < hi and lo > 0.1 and hi < 0.4
    assert bootstrap_ci(x) == (lo, hi)  # seeded: reproducible
    paired = np.stack([x, x], 1)
    assert bootstrap_ci(paired, lambda r: float(r[:, 0].mean() - r[:, 1].mean())) == (0.0, 0.0)


def test_matched_comparison_counts_only_settings_as_fluent():
    from explorer.methods.concepts.judges import Verdicts
    from explorer.methods.concepts.steer_eval import Condition, matched

    def cond(name, share, ppl):
        n = 20
        pos = np.array([1.0] * round(share * n) + [-1.0] * (n - round(share * n)))
        return Condition(name, ("",) * n, Verdicts(pos, pos), np.full(n, ppl), np.ones(n))

    base, gcav = cond("none", 0.3, 3.0), cond("gcav", 0.7, 3.3)
    fixed = [cond("a", 0.5, 3.2), cond("b", 0.8, 3.6)]
    res = matched(base, gcav, fixed)
    assert res["matched"] == ["a"] and res["beats_all"] is True
    assert res["interpolated"]["vader"] == pytest.approx(0.5 + (0.8 - 0.5) * (3.3 - 3.2) / (3.6 - 3.2))
    assert matched(base, gcav, [cond("c", 0.75, 3.1)])["beats_all"] is False


def test_real_review_data_is_split_without_leaks():
    from explorer.core.data import DATA_DIR
    from explorer.methods.concepts.reviews import openings, review_concept, reviews

    rows = reviews()
    assert len(rows) == 1983 and {r.source for r in rows} == {"yelp", "amazon"}
    assert (DATA_DIR / "reviews" / "README.md").is_file() and (DATA_DIR / "reviews" / "LICENSE").is_file()
    by_split = {s: {r.text.lower() for r in rows if r.split == s} for s in ("train", "validation", "test")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["validation"] & by_split["test"])
    for split, share in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        part = [r for r in rows if r.split == split]
        assert abs(len(part) / len(rows) - share) < 0.01
        assert abs(np.mean([r.positive for r in part]) - 0.5) < 0.02
    data = review_concept(40)
    assert data.counts() == {"train_pos": 40, "train_neg": 40, "test_pos": 198, "test_neg": 198}
    assert not set(data.texts) & by_split["test"]  # the concept never sees the test split
    test_open = openings("test")
    assert len(test_open) > 100 and all(3 <= len(o.split()) <= 6 for o in test_open)
    negatives = [r.text for r in rows if r.split == "test" and not r.positive]
    assert all(any(t.startswith(o) for t in negatives) for o in test_open)
    assert math.isclose(len(set(test_open)), len(test_open))
