"""The layer x token grid as a Plotly figure (a plain dict, ready for plotly.js or ``go.Figure``).

Two heatmap traces share the axes: a base layer (logit-lens confidence, or another lens) and an
overlay of interpreted cells coloured by mean relevancy (NaN, hence transparent, elsewhere), so a
cell's colour switches from "what the logit lens says" to "how much the reading came from the
state" once it is interpreted. Columns are numeric positions with token texts as tick labels, so
repeated tokens stay separate columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from explorer.core.grid import Grid
from explorer.core.models import LoadedModel
from explorer.core.results import InterpretationSet
from explorer.methods.colouring import ColourLayer, lens_layer, relevancy_layer

# Columns drawn at once: the figure is as wide as the page or ``MIN_COLUMN_PX`` per column,
# whichever is wider, and scrolls sideways; a longer prompt shows a window of this many tokens.
MAX_COLUMNS = 256
MIN_COLUMN_PX = 22  # a vertical tick label (12 px font) plus a gap: labels never overlap
MAX_LABEL_CHARS = 14
# Fonts with glyphs for non-Latin scripts and emoji (Debian: fonts-noto-core, fonts-noto-color-emoji).
FONT_STACK = ("'Noto Sans', 'DejaVu Sans', 'Noto Sans CJK SC', 'Noto Sans Arabic', 'Noto Sans Devanagari', "
              "'Noto Color Emoji', sans-serif")


def token_label(text: str, special: bool) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    if shown.strip() == "":
        shown = repr(shown)[1:-1] or "∅"
    if len(shown) > MAX_LABEL_CHARS:
        shown = shown[:MAX_LABEL_CHARS - 1] + "…"
    return f"⟨{shown}⟩" if special else shown


def column_window(grid: Grid, start: int = 0, width: int = MAX_COLUMNS, floor: int = 0) -> list[int]:
    """The columns shown: ``width`` tokens from ``start``, the window slid back (not before
    ``floor``) so that it is full when the prompt is long enough: no page holds the last token alone."""
    width = max(1, int(width))
    floor = max(0, min(int(floor), grid.n_tokens - 1))
    start = max(floor, min(int(start), grid.n_tokens - width))
    return list(range(start, min(grid.n_tokens, start + width)))


def grid_figure(grid: Grid, base: ColourLayer | None, overlay: ColourLayer | None, cols: list[int], *,
                selected: tuple[int, int] | None = None, title: str = "", height: int | None = None) -> dict:
    """A Plotly figure dict: rows = layers (0 = embeddings, at the bottom), columns = ``cols``."""
    rows = list(range(grid.n_rows))
    ticktext = [token_label(grid.tokens[c], grid.special[c]) for c in cols]
    traces = []
    # Colour bars sit side by side right of the plot; the browser places them in pixels (grid_plot).
    # The base layer hovers on its blank cells too (a row without a value says why); the overlay only on
    # interpreted cells, so the base's hover shows everywhere else.
    for layer, on_gaps, x_bar in ((base, True, 1.01), (overlay, False, 1.08)):
        if layer is None:
            continue
        z = np.where(np.isnan(layer.values), None, np.round(layer.values, 4)).tolist()
        traces.append({
            "type": "heatmap", "name": layer.name, "x": cols, "y": rows, "z": z,
            "zmin": layer.zmin, "zmax": layer.zmax, "zauto": False, "colorscale": layer.colorscale,
            "text": layer.hover, "hovertemplate": "%{text}<extra></extra>", "xgap": 1, "ygap": 1,
            "showscale": True, "hoverongaps": on_gaps,
            "colorbar": {"title": {"text": layer.colorbar_title, "side": "right"}, "x": x_bar, "xanchor": "left",
                         "len": 0.9, "thickness": 12},
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
        "margin": {"l": 70, "r": 190, "t": 40 if title else 16, "b": 90},
        "xaxis": {"tickmode": "array", "tickvals": cols, "ticktext": ticktext, "tickangle": -45, "automargin": True,
                  "title": {"text": "token (position)"}, "range": [cols[0] - 0.5, cols[-1] + 0.5] if cols else None},
        "yaxis": {"title": {"text": "layer (0 = embeddings)"}, "tickmode": "array",
                  "tickvals": rows[::max(1, len(rows) // 16)], "range": [-0.5, grid.n_rows - 0.5]},
        "uirevision": f"{grid.fingerprint()}:{cols[0] if cols else 0}",
        "shapes": shapes,
        "hoverlabel": {"align": "left"},
        "plot_bgcolor": "#ffffff",
        "clickmode": "event",
        "font": {"family": FONT_STACK},
        # Read by the browser to size the figure: at least this many px per column (then it scrolls).
        "meta": {"sx_min_col_px": MIN_COLUMN_PX, "sx_n_cols": len(cols), "sx_n_rows": grid.n_rows},
    }
    return {"data": traces, "layout": layout}


def explore_figure(grid: Grid, lm: LoadedModel, results: InterpretationSet | None, *, start: int = 0,
                   width: int = MAX_COLUMNS, selected: tuple[int, int] | None = None,
                   base: ColourLayer | None = None, floor: int = 0) -> dict:
    """The Explore tab's figure: lens base layer + relevancy overlay for a window of columns
    (``start``, ``width``, ``floor``: see ``column_window``)."""
    cols = column_window(grid, start, width, floor)
    base = base if base is not None else lens_layer(grid, lm, cols)
    overlay = relevancy_layer(grid, results, cols)
    return grid_figure(grid, base, overlay, cols, selected=selected)


def evaluation_figure(summary: dict, path: Path) -> Path:
    """Both curves in one standalone HTML file (plotly.js inline: no CDN)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Token identity precision@1", "Attribute extraction accuracy"))
    ti = summary.get("token_identity")
    if ti:
        fig.add_trace(go.Scatter(x=ti["layer"], y=ti["patchscope"], name="token-identity Patchscope"), 1, 1)
        fig.add_trace(go.Scatter(x=ti["layer"], y=ti["logit_lens"], name="logit lens"), 1, 1)
    att = summary.get("attributes")
    if att:
        frame = pd.DataFrame(att)
        for task, part in frame.groupby("task"):
            n = int(part["baseline_correct"].iloc[0])
            fig.add_trace(go.Scatter(x=part["layer"], y=part["accuracy"], name=f"{task} (n={n})"), 1, 2)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(height=420, title=f"SelfIE Explorer evaluation: {summary.get('model')}")
    fig.write_html(str(path), include_plotlyjs=True)
    return path
