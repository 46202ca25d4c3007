"""A causal trace as a small frozen result: the effect grid with everything needed to read and redo it."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.core.results import public_provenance
from explorer.methods.tracing.inputs import TraceSettings

# Blue = restoring the state lowers p(answer), white = no change, red = it brings the answer back.
EFFECT_SCALE = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#b2182b"]]


@dataclass(frozen=True, eq=False)
class CausalTrace:
    """Causal tracing of one prompt and answer.

    ``effect``: (n_rows, n_tokens) float64, row L = the grid's row L (0 = embeddings, N = the last block's
    output before the final norm): p(answer) with that cell's clean state restored into the corrupted run,
    minus ``p_corrupted``. Cells before the first subject token are 0 (the corruption cannot reach them);
    row 0 of an MLP trace is NaN (no block wrote it). ``p_clean``: p(answer) of the clean prompt;
    ``p_corrupted``: with the subject's embeddings noised, averaged over the samples. p(answer) is the
    probability of the answer's first token (``answer_ids[0]``) at the last position.
    ``subject_positions``: the corrupted tokens; ``noise_std``: the embeddings' standard deviation (the
    noise's is ``settings.noise`` times it).
    """

    prompt: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    answer: str
    answer_ids: tuple[int, ...]
    answer_token: str
    subject: str
    subject_positions: tuple[int, ...]
    effect: np.ndarray
    p_clean: float
    p_corrupted: float
    settings: TraceSettings
    noise_std: float
    provenance: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.effect.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.effect.shape[1])

    @property
    def p_restored(self) -> np.ndarray:
        """(n_rows, n_tokens) p(answer) with each cell restored."""
        return self.effect + self.p_corrupted

    @property
    def total_effect(self) -> float:
        """p_clean - p_corrupted: what restoring everything gives back."""
        return self.p_clean - self.p_corrupted

    @property
    def variant(self) -> str | None:
        return self.provenance.get("variant")

    def matches(self, token_ids, answer: str, subject: str | None, variant: str | None) -> bool:
        """Whether this trace is the one asked for: same tokens, answer, subject (None: guessed) and model variant."""
        return (tuple(token_ids) == self.token_ids and answer == self.provenance.get("answer_given")
                and (subject or None) == self.provenance.get("subject_given") and variant == self.variant)

    def to_frame(self) -> pd.DataFrame:
        """One row per cell: layer, token, token_decoded, subject (bool), p_restored, effect."""
        subject = set(self.subject_positions)
        restored = self.p_restored
        return pd.DataFrame([{"layer": layer, "token": t, "token_decoded": self.tokens[t], "subject": t in subject,
                              "p_restored": _num(restored[layer, t]), "effect": _num(self.effect[layer, t])}
                             for layer in range(self.n_rows) for t in range(self.n_tokens)])

    def summary(self) -> dict:
        """Everything but the grid: what was traced and how (JSON-ready)."""
        return {"prompt": self.prompt, "answer": self.answer, "answer_token": self.answer_token,
                "answer_ids": list(self.answer_ids), "subject": self.subject,
                "subject_positions": list(self.subject_positions), "p_clean": self.p_clean,
                "p_corrupted": self.p_corrupted, **self.settings.to_dict(), "noise_std": self.noise_std}

    def to_csv(self, path: str | Path | None = None) -> str:
        """The frame with the trace's settings and provenance as constant columns."""
        frame = self.to_frame()
        extra = {**{k: v for k, v in self.summary().items() if k not in ("answer_ids", "subject_positions")},
                 **public_provenance({k: v for k, v in self.provenance.items() if not k.endswith("_given")})}
        for key, value in extra.items():
            frame[key] = "" if value is None else value
        text = frame.to_csv(index=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        """``{summary..., "tokens", "effect": [[row 0], ...], "provenance"}`` (NaN as null)."""
        payload = {**self.summary(), "tokens": list(self.tokens), "token_ids": list(self.token_ids),
                   "effect": [[_num(v) for v in row] for row in self.effect],
                   "provenance": public_provenance(self.provenance)}
        text = json.dumps(payload, ensure_ascii=False, indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def text_table(self, every: int = 1) -> str:
        """The grid as text, top row first (every ``every``-th row and always the last), subject tokens marked *."""
        width = max(7, *(min(12, len(repr(t))) + 1 for t in self.tokens))
        subject = set(self.subject_positions)
        head = "layer " + "".join(f"{(repr(t)[:11] + ('*' if i in subject else '')):>{width}}"
                                  for i, t in enumerate(self.tokens))
        rows = [r for r in range(self.n_rows) if r % max(1, every) == 0 or r == self.n_rows - 1]
        lines = [head]
        for r in reversed(rows):
            lines.append(f"{r:>5} " + "".join(f"{_cell(self.effect[r, t]):>{width}}" for t in range(self.n_tokens)))
        return "\n".join(lines)

    def legend(self) -> str:
        """The colour bar's title: what is measured, with p_clean and p_corrupted."""
        return (f"effect on p({html.escape(repr(self.answer_token))})<br>p_clean {self.p_clean:.3f}"
                f"<br>p_corrupted {self.p_corrupted:.3f}")

    def figure(self, title: str | None = None) -> dict:
        """A standalone Plotly figure dict of the effect grid (diverging colours around 0)."""
        span = effect_span(self.effect)
        subject = set(self.subject_positions)
        ticks = [("*" if t in subject else "") + tok for t, tok in enumerate(self.tokens)]
        hover = [[cell_hover(self, r, t) for t in range(self.n_tokens)] for r in range(self.n_rows)]
        z = [[_num(v) for v in row] for row in self.effect]
        return {"data": [{"type": "heatmap", "name": "causal effect on the answer", "z": z,
                          "x": list(range(self.n_tokens)), "y": list(range(self.n_rows)), "zmin": -span, "zmax": span,
                          "colorscale": EFFECT_SCALE, "text": hover, "hovertemplate": "%{text}<extra></extra>",
                          "xgap": 1, "ygap": 1, "hoverongaps": False,
                          "colorbar": {"title": {"text": self.legend(), "side": "right"}}}],
                "layout": {"title": {"text": title if title is not None else
                                     f"causal trace of {html.escape(repr(self.answer_token))} ({self.settings.kind})"},
                           "height": max(360, 16 * self.n_rows + 140),
                           "xaxis": {"tickmode": "array", "tickvals": list(range(self.n_tokens)), "ticktext": ticks,
                                     "tickangle": -45, "title": {"text": "token (* = subject, corrupted)"}},
                           "yaxis": {"title": {"text": "layer (0 = embeddings)"}}}}


def cell_hover(trace: CausalTrace, row: int, token: int) -> str:
    """One cell's hover text: what restoring it does to p(answer)."""
    value = trace.effect[row, token]
    head = f"<b>layer {row} · {html.escape(repr(trace.tokens[token]))} (pos {token})</b>"
    mark = " (subject, corrupted)" if token in trace.subject_positions else ""
    if not np.isfinite(value):
        return f"{head}{mark}<br>nothing restored here (no block wrote row 0)"
    return (f"{head}{mark}<br>restored: p({html.escape(repr(trace.answer_token))}) = {value + trace.p_corrupted:.4f}"
            f"<br>effect {value:+.4f} (clean {trace.p_clean:.4f}, corrupted {trace.p_corrupted:.4f})")


def effect_span(values: np.ndarray) -> float:
    """The colour scale's half-width: the largest |effect| (a tiny positive number when all are 0)."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1e-6


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _cell(value) -> str:
    return "" if not np.isfinite(value) else f"{value:+.3f}"
