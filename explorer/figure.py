"""The layer x token grid as a Plotly figure (a plain dict, ready for plotly.js or ``go.Figure``).

Two heatmap traces share the axes: a base layer (logit-lens confidence, or another lens) and an
overlay of interpreted cells coloured by mean relevancy (NaN, hence transparent, elsewhere), so a
cell's colour switches from "what the logit lens says" to "how much the reading came from the
state" once it is interpreted. Columns are numeric positions with token texts as tick labels, so
repeated tokens stay separate columns.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass

import numpy as np

from explorer.grid import Grid
from explorer.models import LoadedModel
from explorer.results import InterpretationSet

LENS_SCALE = [[0.0, "#f3f4f6"], [0.5, "#93c5fd"], [1.0, "#1e3a8a"]]
RELEVANCY_SCALE = [[0.0, "#fff7ed"], [0.35, "#fdba74"], [0.7, "#ea580c"], [1.0, "#7c2d12"]]
MAX_COLUMNS = 64


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


def token_label(text: str, special: bool) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    if shown.strip() == "":
        shown = repr(shown)[1:-1] or "∅"
    return f"⟨{shown}⟩" if special else shown


def column_window(grid: Grid, start: int = 0, width: int = MAX_COLUMNS) -> list[int]:
    """The columns shown: long prompts are paged ``width`` tokens at a time."""
    start = max(0, min(int(start), max(0, grid.n_tokens - 1)))
    return list(range(start, min(grid.n_tokens, start + width)))


def lens_layer(grid: Grid, lm: LoadedModel, cols: list[int], k: int = 5) -> ColourLayer:
    """Logit-lens confidence (top-1 probability) with the top-k tokens on hover."""
    lens = grid.lens(lm, cols=cols, k=k)
    tok = lm.tokenizer
    hover = []
    for i, layer in enumerate(lens.rows):
        row = []
        for j, col in enumerate(cols):
            tops = ", ".join(f"{html.escape(repr(tok.decode([int(t)])))} {p:.2f}"
                             for t, p in zip(lens.ids[i, j], lens.probs[i, j]))
            row.append(f"<b>layer {layer} · {html.escape(repr(grid.tokens[col]))} (pos {col})</b><br>"
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
        wrapped = "<br>".join(textwrap.wrap(html.escape(cell.interpretation or "(empty)"), 60))
        score = "pending" if rel is None else f"{rel:.3f}"
        hover[cell.layer][j] = (f"<b>layer {cell.layer} · {html.escape(repr(cell.token_decoded))} (pos {cell.token})"
                                f"</b><br>{wrapped}<br>relevancy: {score}")
    return ColourLayer("relevancy", values, hover, RELEVANCY_SCALE, 0.0, zmax, "mean relevancy")


def grid_figure(grid: Grid, base: ColourLayer | None, overlay: ColourLayer | None, cols: list[int], *,
                selected: tuple[int, int] | None = None, title: str = "", height: int | None = None) -> dict:
    """A Plotly figure dict: rows = layers (0 = embeddings, at the bottom), columns = ``cols``."""
    rows = list(range(grid.n_rows))
    ticktext = [token_label(grid.tokens[c], grid.special[c]) for c in cols]
    traces = []
    for layer, show_scale, x_bar in ((base, True, 1.02), (overlay, True, 1.12)):
        if layer is None:
            continue
        z = np.where(np.isnan(layer.values), None, np.round(layer.values, 4)).tolist()
        traces.append({
            "type": "heatmap", "name": layer.name, "x": cols, "y": rows, "z": z,
            "zmin": layer.zmin, "zmax": layer.zmax, "colorscale": layer.colorscale,
            "text": layer.hover, "hovertemplate": "%{text}<extra></extra>", "xgap": 1, "ygap": 1,
            "showscale": show_scale, "hoverongaps": False,
            "colorbar": {"title": {"text": layer.colorbar_title, "side": "right"}, "x": x_bar, "len": 0.9,
                         "thickness": 12},
        })
    shapes = []
    if selected is not None and selected[1] in cols:
        layer, token = selected
        shapes.append({"type": "rect", "x0": token - 0.5, "x1": token + 0.5, "y0": layer - 0.5, "y1": layer + 0.5,
                       "line": {"color": "#16a34a", "width": 3}})
    fig_height = height or max(360, 18 * grid.n_rows + 140)
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 14}},
        "height": fig_height,
        "margin": {"l": 70, "r": 150, "t": 40 if title else 16, "b": 90},
        "xaxis": {"tickmode": "array", "tickvals": cols, "ticktext": ticktext, "tickangle": -45,
                  "title": {"text": "token (position)"}, "range": [cols[0] - 0.5, cols[-1] + 0.5] if cols else None},
        "yaxis": {"title": {"text": "layer (0 = embeddings)"}, "tickmode": "array",
                  "tickvals": rows[::max(1, len(rows) // 16)], "range": [-0.5, grid.n_rows - 0.5]},
        "uirevision": f"{grid.fingerprint()}:{cols[0] if cols else 0}",
        "shapes": shapes,
        "hoverlabel": {"align": "left"},
        "plot_bgcolor": "#ffffff",
        "clickmode": "event",
    }
    return {"data": traces, "layout": layout}


def explore_figure(grid: Grid, lm: LoadedModel, results: InterpretationSet | None, *, start: int = 0,
                   width: int = MAX_COLUMNS, selected: tuple[int, int] | None = None,
                   base: ColourLayer | None = None) -> dict:
    """The Explore tab's figure: lens base layer + relevancy overlay for a window of columns."""
    cols = column_window(grid, start, width)
    base = base if base is not None else lens_layer(grid, lm, cols)
    overlay = relevancy_layer(grid, results, cols)
    return grid_figure(grid, base, overlay, cols, selected=selected)
