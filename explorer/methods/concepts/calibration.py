"""Calibrated linear probes: a fast L2 logistic regression, regularisation chosen on held-out log-loss,
temperature scaling, and the expected calibration error.

A probe fitted with weak regularisation on few examples in many dimensions separates its training
set perfectly; its weight vector then grows until the held-out probabilities are over-confident,
and GCAV's closed-form step ``(s0 - b - w.e) / ||w||`` shrinks with it. So the regularisation C is
chosen by k-fold cross-validated log-loss on the training part, and a temperature T fitted on the
out-of-fold logits softens (or sharpens) what is left; the held-out part is never used for either.

The solver minimises sklearn's objective ``0.5 ||w||^2 + C sum_i s_i logloss(y_i, w.z_i + b)`` (s_i:
class-balancing weights n / (2 n_class)) by Newton's method in the span of the training rows (w lies
there for any C, so with n < d the problem has n unknowns, not d): one SVD per row serves every C
and every fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
FOLDS = 4
_T_RANGE = (0.25, 20.0)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """s_i = n / (2 n_class(i)): both classes weigh the same in the loss (1 each for a balanced set)."""
    y = np.asarray(y, dtype=int)
    n1 = max(int(y.sum()), 1)
    n0 = max(len(y) - int(y.sum()), 1)
    return np.where(y == 1, len(y) / (2 * n1), len(y) / (2 * n0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def newton_logistic(f: np.ndarray, y: np.ndarray, c: float, weights: np.ndarray | None = None,
                    start: np.ndarray | None = None, iters: int = 60, tol: float = 1e-9) -> np.ndarray:
    """(beta, b) minimising 0.5 ||beta||^2 + c sum_i s_i logloss(y_i, f_i.beta + b) (b unpenalised).

    ``f``: (n, r) features, ``y``: 0/1. The objective is strongly convex in beta, so damped Newton
    steps converge in a few iterations; ``start`` warm-starts along a path of C values.
    """
    n, r = f.shape
    s = np.ones(n) if weights is None else weights
    y = np.asarray(y, dtype=np.float64)
    theta = np.zeros(r + 1) if start is None else start.copy()
    fa = np.hstack([f, np.ones((n, 1))])
    reg = np.ones(r + 1)
    reg[-1] = 0.0

    def objective(t: np.ndarray) -> float:
        m = fa @ t
        return 0.5 * float(np.sum(reg * t * t)) + c * float(np.sum(s * (np.logaddexp(0.0, m) - y * m)))

    obj = objective(theta)
    for _ in range(iters):
        p = _sigmoid(fa @ theta)
        grad = reg * theta + c * (fa.T @ (s * (p - y)))
        if np.max(np.abs(grad)) < tol * max(1.0, c * n):
            break
        d = c * s * p * (1.0 - p)
        hess = (fa.T * d) @ fa + np.diag(reg + 1e-10)
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while True:  # backtracking: never increase the objective
            trial = theta - size * step
            new = objective(trial)
            if new <= obj + 1e-12 * abs(obj) or size < 1e-6:
                break
            size *= 0.5
        theta, done = trial, obj - new < 1e-13 * max(1.0, abs(obj))
        obj = new
        if done:
            break
    return theta


def log_loss(y: np.ndarray, logit: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean (weighted) binary log-loss of logits."""
    y = np.asarray(y, dtype=np.float64)
    s = np.ones(len(y)) if weights is None else weights
    return float(np.sum(s * (np.logaddexp(0.0, logit) - y * logit)) / np.sum(s))


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """ECE: over ``bins`` equal-width probability bins, the share-weighted gap between the mean predicted
    probability and the observed frequency of the positive class."""
    y = np.asarray(y, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        m = idx == k
        if m.any():
            total += m.mean() * abs(prob[m].mean() - y[m].mean())
    return float(total)


def fit_temperature(y: np.ndarray, logit: np.ndarray, weights: np.ndarray | None = None) -> float:
    """T minimising the log-loss of logit / T (bounded to [0.25, 20]); 1 when the logits carry no signal."""
    if np.ptp(logit) == 0:
        return 1.0
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda a: log_loss(y, a * logit, weights), bounds=(1 / _T_RANGE[1], 1 / _T_RANGE[0]),
                          method="bounded", options={"xatol": 1e-6})
    return float(1.0 / res.x)


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint index sets, each with about 1/k of either class (deterministic)."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for cls in (0, 1):
        idx = np.flatnonzero(np.asarray(y) == cls)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[j % k].append(int(i))
    return [np.array(sorted(f), dtype=int) for f in folds]


@dataclass(frozen=True)
class LogisticFit:
    """A logistic probe on standardised inputs: ``wz`` (d,), ``bz``, already divided by ``temperature``;
    ``c``: the chosen regularisation; ``cv_log_loss``: its out-of-fold log-loss after the temperature."""

    wz: np.ndarray
    bz: float
    c: float
    temperature: float
    cv_log_loss: float


def _basis(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features in the span of the rows (n, r) and the basis (r, d): w = basis.T @ beta."""
    u, sv, vt = np.linalg.svd(z, full_matrices=False)
    keep = sv > sv.max() * 1e-10 if sv.size else sv > 0
    return u[:, keep] * sv[keep], vt[keep]


def calibrated_logistic(z: np.ndarray, y: np.ndarray, c: float | None = None, grid: Sequence[float] = C_GRID,
                        folds: int = FOLDS, temperature: bool = True) -> LogisticFit:
    """Logistic regression on standardised ``z`` (n, d), class-balanced. ``c=None``: the C of ``grid`` with
    the lowest cross-validated log-loss (after the temperature when ``temperature``); a given ``c`` is
    used as is (and, with ``temperature``, still calibrated on out-of-fold logits)."""
    y = np.asarray(y, dtype=int)
    f, basis = _basis(z)
    weights = balanced_weights(y)
    k = max(2, min(folds, int(np.bincount(y, minlength=2).min())))
    parts = stratified_folds(y, k)
    cs = list(grid) if c is None else [float(c)]
    oof = np.zeros((len(cs), len(y)))
    for part in parts:
        train = np.setdiff1d(np.arange(len(y)), part)
        start = None
        for j, cj in enumerate(cs):  # increasing C, warm-started
            start = newton_logistic(f[train], y[train], cj, weights[train], start)
            oof[j, part] = f[part] @ start[:-1] + start[-1]
    scores, temps = [], []
    for j in range(len(cs)):
        t = fit_temperature(y, oof[j], weights) if temperature else 1.0
        temps.append(t)
        scores.append(log_loss(y, oof[j] / t, weights))
    best = int(np.argmin(scores))
    theta = newton_logistic(f, y, cs[best], weights)
    t = temps[best]
    return LogisticFit(basis.T @ theta[:-1] / t, float(theta[-1] / t), cs[best], t, float(scores[best]))


def platt_1d(q: np.ndarray, y: np.ndarray, c: float = 1.0) -> tuple[float, float]:
    """(a, b) of P = sigmoid(a q + b) on a 1-D score, class-balanced, with sklearn's default L2 (C = 1) on
    the standardised score so that a separable score gets a finite, not an infinite, slope."""
    q = np.asarray(q, dtype=np.float64)
    mu, sd = float(q.mean()), float(q.std())
    sd = sd if sd > 1e-12 else 1.0
    theta = newton_logistic(((q - mu) / sd)[:, None], np.asarray(y, dtype=int), c, balanced_weights(y))
    a = float(theta[0] / sd)
    return a, float(theta[1] - a * mu)


def finite(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")
