"""A prompt's geometric feature vector: per layer, seven statistics of its tokens' region geometry plus
the attention intrinsic dimension (docs/geometry.md).

Per layer L (block L-1): mean, min, max and std of the on-fraction s_t; min, mean and std of the
boundary distance d_t; the last token's intrinsic dimension and its mean over tokens. All layers
together (9 x N numbers) are the prompt's feature vector for a linear probe.
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

STATS = ("s_mean", "s_min", "s_max", "s_std", "d_min", "d_mean", "d_std", "id_last", "id_mean")
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class PromptFeatures:
    """``values``: (P, N, 9) float, prompt x layer (``layers[i]`` = row, block row-1) x ``STATS``;
    ``states``: (P, N+1, d) float32 last-token residual states (row 0 = embeddings), or None."""

    texts: tuple[str, ...]
    layers: tuple[int, ...]
    values: np.ndarray
    states: np.ndarray | None = None
    labels: tuple | None = None

    def matrix(self, layers: Sequence[int] | None = None) -> np.ndarray:
        """(P, len(layers) * 9): the feature vectors over the given layers (default all)."""
        idx = [self.layers.index(layer) for layer in (layers or self.layers)]
        return self.values[:, idx, :].reshape(len(self.texts), -1)

    def to_frame(self):
        """One row per prompt: ``text``, ``label`` (when known) and ``layer{L}_{stat}`` columns."""
        import pandas as pd

        cols = {f"layer{layer}_{stat}": self.values[:, i, j]
                for i, layer in enumerate(self.layers) for j, stat in enumerate(STATS)}
        head: dict = {"text": list(self.texts)}
        if self.labels is not None:
            head["label"] = list(self.labels)
        return pd.DataFrame({**head, **cols})


def layer_statistics(g: GeometryGrid) -> np.ndarray:
    """(N, 9) statistics over the prompt's tokens for rows 1..N (see ``STATS``)."""
    s, d, dim = g.on_fraction[1:], g.distance[1:], g.intrinsic_dim[1:]
    return np.stack([s.mean(1), s.min(1), s.max(1), s.std(1), d.min(1), d.mean(1), d.std(1), dim[:, -1],
                     dim.mean(1)], axis=1)


def prompt_features(lm: LoadedModel, texts: Sequence[str], *, labels: Sequence | None = None,
                    states: bool = False, max_tokens: int = DEFAULT_MAX_TOKENS,
                    progress: Callable[[int, int, float], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> PromptFeatures:
    """One geometry pass per prompt (no padding, so every token is the prompt's own).

    ``progress(done, total, seconds_left)`` after each prompt; ``should_stop()`` ends early with
    :class:`InputError`. Prompts longer than ``max_tokens`` keep their first ``max_tokens`` tokens.
    """
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
        rows.append(layer_statistics(g))
        if g.last_states is not None:
            kept.append(g.last_states)
        if progress is not None:
            elapsed = time.monotonic() - started
            progress(i + 1, len(texts), elapsed / (i + 1) * (len(texts) - i - 1))
    return PromptFeatures(tuple(texts), tuple(range(1, lm.n_layers + 1)), np.stack(rows),
                          np.stack(kept) if states else None, tuple(labels) if labels is not None else None)


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
