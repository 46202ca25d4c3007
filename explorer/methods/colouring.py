"""The grid's colour modes: what each cell's colour means before (and under) its reading.

A colour mode turns a grid and a window of columns into a :class:`ColourLayer`. Modes are
registered by key in :data:`COLOUR_MODES`; a method that adds a way to colour the grid registers a
:class:`ColourMode` there (see docs/extending.md) and the Explore tab's menu lists it.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from explorer.core.errors import InputError
from explorer.core.grid import Grid
from explorer.core.models import LoadedModel
from explorer.core.results import InterpretationSet
from explorer.methods.lenses import TokenIdentity, token_identity

LENS_SCALE = [[0.0, "#f3f4f6"], [0.5, "#93c5fd"], [1.0, "#1e3a8a"]]
RELEVANCY_SCALE = [[0.0, "#fff7ed"], [0.35, "#fdba74"], [0.7, "#ea580c"], [1.0, "#7c2d12"]]
RANK_SCALE = [[0.0, "#14532d"], [0.3, "#86efac"], [1.0, "#f9fafb"]]
HIT_SCALE = [[0.0, "#fee2e2"], [1.0, "#166534"]]


def _esc(text: str) -> str:
    """Escape for Plotly's hover labels: plotly.js decodes &lt; &gt; &amp; but shows &quot; and &#x27;
    literally, so quotes are left as they are (they cannot open a tag)."""
    return html.escape(text, quote=False)


@dataclass
class ColourLayer:
    """Values (R, C) with hover texts (R, C) for the rows/cols of a view; NaN cells are not drawn."""

    name: str
    values: np.ndarray
    hover: list[list[str]]
    colorscale: list
    zmin: float = 0.0
    zmax: float = 1.0
    colorbar_title: str = ""


def lens_layer(grid: Grid, lm: LoadedModel, cols: list[int], k: int = 5) -> ColourLayer:
    """Logit-lens confidence (top-1 probability) with the top-k tokens on hover."""
    lens = grid.lens(lm, cols=cols, k=k)
    tok = lm.tokenizer
    hover = []
    for i, layer in enumerate(lens.rows):
        row = []
        for j, col in enumerate(cols):
            tops = ", ".join(f"{_esc(repr(tok.decode([int(t)])))} {p:.2f}"
                             for t, p in zip(lens.ids[i, j], lens.probs[i, j]))
            row.append(f"<b>layer {layer} · {_esc(repr(grid.tokens[col]))} (pos {col})</b><br>"
                       f"logit lens: {tops}<br>rank of final prediction: {lens.final_rank[i, j]}")
        hover.append(row)
    return ColourLayer("logit-lens confidence", lens.probs[:, :, 0].astype(float), hover, LENS_SCALE,
                       colorbar_title="lens p(top-1)")


def relevancy_layer(grid: Grid, results: InterpretationSet | None, cols: list[int], zmax: float = 0.5) -> ColourLayer:
    """Mean relevancy of interpreted cells; hover shows the interpretation."""
    values = np.full((grid.n_rows, len(cols)), np.nan)
    hover = [["" for _ in cols] for _ in range(grid.n_rows)]
    col_index = {c: j for j, c in enumerate(cols)}
    for cell in (results.cells if results else []):
        j = col_index.get(cell.token)
        if j is None or cell.layer >= grid.n_rows:
            continue
        rel = cell.mean_relevancy
        values[cell.layer, j] = rel if rel is not None else 0.0
        wrapped = "<br>".join(textwrap.wrap(_esc(cell.interpretation or "(empty)"), 60))
        score = "pending" if rel is None else f"{rel:.3f}"
        hover[cell.layer][j] = (f"<b>layer {cell.layer} · {_esc(repr(cell.token_decoded))} (pos {cell.token})"
                                f"</b><br>{wrapped}<br>relevancy: {score}")
    return ColourLayer("relevancy", values, hover, RELEVANCY_SCALE, 0.0, zmax, "mean relevancy")


def final_rank_layer(grid: Grid, lm: LoadedModel, cols: list[int]) -> ColourLayer:
    """Rank of the model's final prediction in each cell's logit lens (log scale, 0 = top)."""
    tok = lm.tokenizer
    lens = grid.lens(lm, cols=cols, k=1)
    final = grid.next_token_ids(lm)
    values = np.log10(1 + lens.final_rank.astype(float)) / np.log10(1 + len(tok))
    hover = [[f"<b>layer {r} · {_esc(repr(grid.tokens[c]))} (pos {c})</b><br>rank of the final prediction "
              f"{_esc(repr(tok.decode([int(final[c])])))}: {lens.final_rank[i, j]}"
              for j, c in enumerate(cols)] for i, r in enumerate(lens.rows)]
    return ColourLayer("final-prediction rank", values, hover, RANK_SCALE, 0.0, 1.0, "log rank (0 = top)")


def token_identity_layer(grid: Grid, lm: LoadedModel, cols: list[int]) -> ColourLayer:
    """Does the token-identity Patchscope at each cell name the model's own next token?"""
    tok = lm.tokenizer
    whole = token_identity(lm, grid)  # the whole grid, computed once and kept
    assert whole is not None  # not stoppable here
    ti = _cols_of(whole, cols)
    final = grid.next_token_ids(lm)
    hover = [[f"<b>layer {r} · {_esc(repr(grid.tokens[c]))} (pos {c})</b><br>token identity reads "
              f"{_esc(repr(tok.decode([int(ti.predicted[i, j])])))} ({ti.prob[i, j]:.2f}); the model predicts "
              f"{_esc(repr(tok.decode([int(final[c])])))}" for j, c in enumerate(cols)]
             for i, r in enumerate(ti.rows)]
    return ColourLayer("token identity", ti.hit, hover, HIT_SCALE, 0.0, 1.0, "matches final prediction")


def _cols_of(ti: TokenIdentity, cols: list[int]) -> TokenIdentity:
    j = [ti.cols.index(c) for c in cols]
    return TokenIdentity(ti.rows, list(cols), ti.predicted[:, j], ti.prob[:, j], ti.hit[:, j])


@dataclass(frozen=True)
class ColourMode:
    """A way to colour the grid: ``layer(grid, lm, cols)`` gives the base layer (None: none); ``help`` says
    in one sentence what a cell's colour means and in which units (shown under the grid)."""

    key: str
    label: str
    layer: Callable[[Grid, LoadedModel, list[int]], ColourLayer | None]
    help: str = ""


COLOUR_MODES: dict[str, ColourMode] = {}


def register_colour_mode(mode: ColourMode) -> ColourMode:
    """Add (or replace) a colour mode; the Explore menu lists modes in registration order."""
    COLOUR_MODES[mode.key] = mode
    return mode


for _mode in (
    ColourMode("logit_lens", "logit-lens confidence", lambda g, lm, cols: lens_layer(g, lm, cols),
               "the probability (0 to 1) of the logit lens's top token at each state; darker = surer. Hover for "
               "its top 5. Read cells are drawn on top by relevancy."),
    ColourMode("final_rank", "rank of the final prediction", final_rank_layer,
               "where the model's final next token ranks in each state's logit lens, on a log scale (0 = it is "
               "already the top token; pale = far down)."),
    ColourMode("token_identity", "token identity (Patchscope)", token_identity_layer,
               "green where the state, patched into \"cat -> cat; 1135 -> 1135; hello -> hello; ?\", makes the "
               "model name the token it predicts next there (1), red where not (0)."),
    ColourMode("relevancy", "SelfIE relevancy only", lambda g, lm, cols: None,
               "only the cells read so far, by mean relevancy (0 to 1: how much the reading came from the state)."),
):
    register_colour_mode(_mode)


def colour_choices() -> list[tuple[str, str]]:
    """(label, key) pairs for a menu."""
    return [(m.label, m.key) for m in COLOUR_MODES.values()]


def colour_layer(mode: str, grid: Grid, lm: LoadedModel, cols: list[int]) -> ColourLayer | None:
    """The heatmap's base layer for a colour mode (None: relevancy only)."""
    if mode not in COLOUR_MODES:
        raise InputError(f"Unknown colour mode '{mode}'; choose one of {', '.join(COLOUR_MODES)}.")
    return COLOUR_MODES[mode].layer(grid, lm, cols)
