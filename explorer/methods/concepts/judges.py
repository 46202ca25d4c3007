"""Two independent lexicon judges of sentiment, their agreement, and bootstrap intervals.

- VADER (Hutto & Gilbert 2014): a continuation is positive when its compound score is >= 0.05.
- AFINN (Nielsen 2011, the ``afinn`` package): a continuation is positive when its summed word
  valence is > 0.

Both are pure-Python word lists with rules, built independently of each other and of the model.
Intervals are percentile bootstraps over prompts (paired: a difference between two conditions
resamples the same prompts for both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BOOTSTRAP = 2000


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=1)
def _afinn():
    from afinn import Afinn

    return Afinn()


def vader_scores(texts: Sequence[str]) -> np.ndarray:
    """VADER compound score of each text (-1..1)."""
    sia = _vader()
    return np.array([float(sia.polarity_scores(t)["compound"]) for t in texts])


def afinn_scores(texts: Sequence[str]) -> np.ndarray:
    """AFINN summed valence of each text."""
    af = _afinn()
    return np.array([float(af.score(t)) for t in texts])


@dataclass(frozen=True)
class Verdicts:
    """Per text: VADER compound, AFINN score, and each judge's positive call."""

    vader: np.ndarray
    afinn: np.ndarray

    @property
    def vader_positive(self) -> np.ndarray:
        return self.vader >= 0.05

    @property
    def afinn_positive(self) -> np.ndarray:
        return self.afinn > 0

    def agreement(self) -> dict[str, float]:
        """Share of texts both judges call the same way, and Cohen's kappa of the two calls."""
        return agreement(self.vader_positive, self.afinn_positive)


def judge(texts: Sequence[str]) -> Verdicts:
    return Verdicts(vader_scores(texts), afinn_scores(texts))


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Raw agreement and Cohen's kappa of two boolean calls on the same items."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if len(a) == 0:
        return {"agreement": float("nan"), "kappa": float("nan")}
    po = float(np.mean(a == b))
    pe = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    kappa = (po - pe) / (1 - pe) if pe < 1 else 1.0
    return {"agreement": po, "kappa": float(kappa)}


def bootstrap_ci(values: Sequence[float] | np.ndarray, stat: Callable[[np.ndarray], float] = np.mean,
                 n: int = BOOTSTRAP, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the items of ``values`` (rows resampled together
    when ``values`` is 2-D: paired differences keep their pairing). NaN items are dropped."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x).any(axis=tuple(range(1, x.ndim)))] if x.ndim > 1 else x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n, len(x)))
    stats = np.array([stat(x[i]) for i in idx])
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
