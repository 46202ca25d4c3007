"""A prompt's geometric feature vector: per layer, the seven statistics of its tokens' region geometry
(SplineLLM's features; docs/geometry.md), optionally with the attention intrinsic dimension.

Per layer L (block L-1): mean, min, max and std of the on-fraction s_t; min, mean and std of the
boundary distance d_t (``PAPER_STATS``, the default). The standard deviations over tokens follow the
authors' convention, the sample standard deviation (divisor T - 1; NaN for a one-token prompt, which
the probe reads as 0). ``EXTENDED_STATS`` adds the last token's intrinsic dimension and its mean over
tokens. All layers together (7 x N, or 9 x N, numbers) are the prompt's feature vector for a probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer.core.errors import InputError
from explorer.core.files import not_text, readable_file, shorten
from explorer.core.models import LoadedModel
from explorer.methods.geometry.features import GeometryGrid, geometry

PAPER_STATS = ("s_mean", "s_min", "s_max", "s_std", "d_min", "d_mean", "d_std")
EXTENDED_STATS = (*PAPER_STATS, "id_last", "id_mean")
STATS = EXTENDED_STATS  # every statistic this module can compute, in column order
FEATURE_SETS = {"paper": PAPER_STATS, "extended": EXTENDED_STATS}
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class PromptFeatures:
    """``values``: (P, N, len(stats)) float, prompt x layer (``layers[i]`` = row, block row-1) x ``stats``;
    ``states``: (P, N+1, d) float32 last-token residual states (row 0 = embeddings), or None."""

    texts: tuple[str, ...]
    layers: tuple[int, ...]
    values: np.ndarray
    states: np.ndarray | None = None
    labels: tuple | None = None
    stats: tuple[str, ...] = PAPER_STATS

    def matrix(self, layers: Sequence[int] | None = None) -> np.ndarray:
        """(P, len(layers) * len(stats)): the feature vectors over the given layers (default all)."""
        idx = [self.layers.index(layer) for layer in (layers or self.layers)]
        return self.values[:, idx, :].reshape(len(self.texts), -1)

    def to_frame(self):
        """One row per prompt: ``text``, ``label`` (when known) and ``layer{L}_{stat}`` columns."""
        import pandas as pd

        cols = {f"layer{layer}_{stat}": self.values[:, i, j]
                for i, layer in enumerate(self.layers) for j, stat in enumerate(self.stats)}
        head: dict = {"text": list(self.texts)}
        if self.labels is not None:
            head["label"] = list(self.labels)
        return pd.DataFrame({**head, **cols})


def _sample_std(x: np.ndarray) -> np.ndarray:
    """Standard deviation over tokens with divisor T - 1 (the authors' convention); NaN for one token."""
    if x.shape[1] < 2:
        return np.full(x.shape[0], np.nan)
    return x.std(1, ddof=1)


def layer_statistics(g: GeometryGrid, stats: Sequence[str] = PAPER_STATS) -> np.ndarray:
    """(N, len(stats)) statistics over the prompt's tokens for rows 1..N (names from ``STATS``)."""
    s, d, dim = g.on_fraction[1:], g.distance[1:], g.intrinsic_dim[1:]
    every = {"s_mean": s.mean(1), "s_min": s.min(1), "s_max": s.max(1), "s_std": _sample_std(s),
             "d_min": d.min(1), "d_mean": d.mean(1), "d_std": _sample_std(d), "id_last": dim[:, -1],
             "id_mean": dim.mean(1)}
    return np.stack([every[name] for name in stats], axis=1)


def feature_set(name: str) -> tuple[str, ...]:
    """The statistics of a named feature set: ``paper`` (7 per layer) or ``extended`` (9)."""
    if name not in FEATURE_SETS:
        raise InputError(f"The feature set must be one of {', '.join(FEATURE_SETS)}; got {name!r}.")
    return FEATURE_SETS[name]


def prompt_features(lm: LoadedModel, texts: Sequence[str], *, labels: Sequence | None = None,
                    states: bool = False, max_tokens: int = DEFAULT_MAX_TOKENS, features: str = "paper",
                    progress: Callable[[int, int, float], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> PromptFeatures:
    """One geometry pass per prompt (no padding, so every token is the prompt's own).

    ``progress(done, total, seconds_left)`` after each prompt; ``should_stop()`` ends early with
    :class:`InputError`. Prompts longer than ``max_tokens`` keep their first ``max_tokens`` tokens.
    ``features``: ``paper`` (the 7 statistics per layer, default) or ``extended`` (9, with attention).
    """
    names = feature_set(features)
    texts = [str(t) for t in texts]
    if not texts or any(not t.strip() for t in texts):
        raise InputError("Every prompt must have some text; an empty one was given.")
    if labels is not None and len(labels) != len(texts):
        raise InputError(f"{len(labels)} labels for {len(texts)} prompts: give one label per prompt.")
    rows: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    started = time.monotonic()
    for i, text in enumerate(texts):
        if should_stop is not None and should_stop():
            raise InputError(f"Stopped after {i} of {len(texts)} prompts.")
        ids = lm.tokenizer.encode(text, add_special_tokens=True)[:max_tokens]
        g = geometry(lm, ids, last_states=states)
        rows.append(layer_statistics(g, names))
        if g.last_states is not None:
            kept.append(g.last_states)
        if progress is not None:
            elapsed = time.monotonic() - started
            progress(i + 1, len(texts), elapsed / (i + 1) * (len(texts) - i - 1))
    return PromptFeatures(tuple(texts), tuple(range(1, lm.n_layers + 1)), np.stack(rows),
                          np.stack(kept) if states else None, tuple(labels) if labels is not None else None, names)


def read_labelled_csv(path: str | Path) -> tuple[list[str], list[str]]:
    """``text`` and ``label`` columns of a CSV file (a user's concept set, or a shipped one)."""
    import pandas as pd

    path = readable_file(path, "file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise not_text(path, "file", e) from None
    except Exception:
        raise InputError(f"'{shorten(path.name)}' is not a readable CSV file.") from None
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise InputError(f"'{shorten(path.name)}' needs the columns text and label; it lacks {', '.join(sorted(missing))}.")
    frame = frame[frame["text"].str.strip() != ""]
    if frame["label"].nunique() < 2:
        raise InputError(f"'{shorten(path.name)}' needs at least two different labels.")
    return frame["text"].tolist(), frame["label"].tolist()
