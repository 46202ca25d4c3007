"""Compare two prompts side by side: aligned grids, and the cells whose readings differ.

Tokens are aligned by their text (``difflib``), so "The cat sat" and "The dog sat" pair "The" with
"The" and "sat" with "sat" even when the prompts differ in length; the aligned cells of both grids
are interpreted with the same settings and compared.
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass

import numpy as np

from explorer.api import Explorer
from explorer.core.grid import Grid
from explorer.interpret.engine import InterpretSettings


@dataclass
class Comparison:
    """``pairs[j]`` = (token in A, token in B); ``text_a``/``text_b``/``differs`` are (len(layers), len(pairs))."""

    grid_a: Grid
    grid_b: Grid
    layers: list[int]
    pairs: list[tuple[int, int]]
    text_a: list[list[str]]
    text_b: list[list[str]]
    differs: np.ndarray

    def figure(self) -> dict:
        z = self.differs.astype(float).tolist()
        ticks = [f"{self.grid_a.tokens[a]!s} | {self.grid_b.tokens[b]!s}" for a, b in self.pairs]
        hover = [[f"<b>layer {layer}</b><br>A: {html.escape(self.text_a[i][j])}<br>B: {html.escape(self.text_b[i][j])}"
                  for j in range(len(self.pairs))] for i, layer in enumerate(self.layers)]
        return {"data": [{"type": "heatmap", "z": z, "x": list(range(len(self.pairs))), "y": self.layers,
                          "text": hover, "hovertemplate": "%{text}<extra></extra>", "zmin": 0, "zmax": 1,
                          "colorscale": [[0, "#f3f4f6"], [1, "#dc2626"]], "showscale": False, "xgap": 1, "ygap": 1}],
                "layout": {"height": max(300, 22 * len(self.layers) + 140), "title": {"text": "red = readings differ"},
                           "xaxis": {"tickmode": "array", "tickvals": list(range(len(self.pairs))), "ticktext": ticks,
                                     "tickangle": -45},
                           "yaxis": {"title": {"text": "layer"}, "tickmode": "array", "tickvals": self.layers},
                           "margin": {"l": 60, "r": 20, "t": 40, "b": 110}}}

    def rows(self) -> list[dict]:
        out = []
        for i, layer in enumerate(self.layers):
            for j, (a, b) in enumerate(self.pairs):
                out.append({"layer": layer, "token_a": a, "token_b": b, "text_a": self.grid_a.tokens[a],
                            "text_b": self.grid_b.tokens[b], "reading_a": self.text_a[i][j],
                            "reading_b": self.text_b[i][j], "differs": bool(self.differs[i, j])})
        return out


def align_tokens(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Position pairs: equal tokens, plus replaced spans of equal length paired in order
    ("cat" with "dog" in "The cat sat" / "The dog sat"), which is where readings usually differ."""
    matcher = difflib.SequenceMatcher(a=[t.strip().lower() for t in a], b=[t.strip().lower() for t in b],
                                      autojunk=False)
    pairs = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs += [(i1 + k, j1 + k) for k in range(i2 - i1)]
    if not pairs:  # nothing in common: align by position
        pairs = [(i, i) for i in range(min(len(a), len(b)))]
    return pairs


def compare_prompts(ex: Explorer, prompt_a: str, prompt_b: str, layers: list[int], settings: InterpretSettings,
                    *, chat: bool = False, batch_size: int = 16) -> Comparison:
    grid_a, grid_b = ex.run(prompt_a, chat=chat), ex.run(prompt_b, chat=chat)
    for layer in layers:
        grid_a.check_cell(layer, 0)
    pairs = align_tokens(grid_a.tokens, grid_b.tokens)
    res_a = ex.interpret(grid_a, [(layer, a) for layer in layers for a, _ in pairs], settings=settings,
                         batch_size=batch_size, relevancy=False)
    res_b = ex.interpret(grid_b, [(layer, b) for layer in layers for _, b in pairs], settings=settings,
                         batch_size=batch_size, relevancy=False)
    text_a = [[res_a.get(layer, a).interpretation for a, _ in pairs] for layer in layers]
    text_b = [[res_b.get(layer, b).interpretation for _, b in pairs] for layer in layers]
    differs = np.array([[x != y for x, y in zip(ra, rb)] for ra, rb in zip(text_a, text_b)])
    return Comparison(grid_a, grid_b, layers, pairs, text_a, text_b, differs)
