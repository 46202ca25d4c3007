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
from explorer.core.errors import InputError
from explorer.core.grid import Grid
from explorer.core.models import LoadedModel
from explorer.interpret.engine import InterpretSettings
from explorer.methods.geometry.features import find_mlp_input, geometry, hamming
from explorer.methods.tracing import CausalTrace, TraceSettings, diff_traces, trace_ids
from explorer.methods.tracing.result import EFFECT_SCALE, effect_span


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
    hamming: np.ndarray | None = None  # (len(layers), len(pairs)) fraction of region-code bits that differ
    causal: np.ndarray | None = None  # (len(layers), len(pairs)) causal effect in A minus in B
    traces: tuple[CausalTrace, CausalTrace] | None = None  # the two causal traces behind ``causal``

    def figure(self) -> dict:
        """Red where the readings differ, or (when ``hamming`` is set) shaded by the region-code Hamming distance,
        or (when ``causal`` is set) by the difference of the two causal traces."""
        if self.causal is not None:
            return self._causal_figure()
        geometric = self.hamming is not None
        values = self.hamming if self.hamming is not None else self.differs.astype(float)
        hover = [[f"<b>layer {layer}</b><br>A: {html.escape(self.text_a[i][j])}<br>B: {html.escape(self.text_b[i][j])}"
                  + (f"<br>region-code Hamming distance (block {layer - 1}): {self.hamming[i, j]:.3f}"
                     if self.hamming is not None and layer > 0 else "")
                  for j in range(len(self.pairs))] for i, layer in enumerate(self.layers)]
        zmax = float(np.nanmax(values)) if geometric and np.isfinite(values).any() else 1.0
        title = ("darker = the MLP treats the two tokens more differently (fraction of neurons whose sign differs)"
                 if geometric else "red = readings differ")
        fig = self._base_figure(values, title)
        fig["data"][0].update({"text": hover, "zmin": 0, "zmax": zmax or 1.0, "showscale": geometric,
                               "colorscale": [[0, "#f3f4f6"], [1, "#7c3aed" if geometric else "#dc2626"]]})
        return fig

    def _causal_figure(self) -> dict:
        assert self.causal is not None and self.traces is not None
        ta, tb = self.traces
        fig = self._base_figure(self.causal, "")
        span = effect_span(self.causal)
        hover = [[f"<b>layer {layer}</b><br>A: {html.escape(self.text_a[i][j])}<br>B: {html.escape(self.text_b[i][j])}"
                  f"<br>causal effect A {ta.effect[layer, a]:+.3f}, B {tb.effect[layer, b]:+.3f}, "
                  f"A − B {self.causal[i, j]:+.3f}" for j, (a, b) in enumerate(self.pairs)]
                 for i, layer in enumerate(self.layers)]
        fig["data"][0].update({"text": hover, "zmin": -span, "zmax": span, "colorscale": EFFECT_SCALE, "showscale": True,
                               "name": "causal effect, A minus B"})
        fig["layout"]["title"] = {"text": f"red = restoring the state matters more in A; A: p({ta.answer_token!r}) "
                                          f"clean {ta.p_clean:.3f} / corrupted {ta.p_corrupted:.3f}; B: "
                                          f"p({tb.answer_token!r}) clean {tb.p_clean:.3f} / corrupted "
                                          f"{tb.p_corrupted:.3f}"}
        return fig

    def _base_figure(self, values: np.ndarray, title: str) -> dict:
        z = [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in values]
        ticks = [f"{self.grid_a.tokens[a]!s} | {self.grid_b.tokens[b]!s}" for a, b in self.pairs]
        return {"data": [{"type": "heatmap", "z": z, "x": list(range(len(self.pairs))), "y": self.layers,
                          "hovertemplate": "%{text}<extra></extra>", "xgap": 1, "ygap": 1, "hoverongaps": False}],
                "layout": {"height": max(300, 22 * len(self.layers) + 140), "title": {"text": title},
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
                            "reading_b": self.text_b[i][j], "differs": bool(self.differs[i, j]),
                            **({"hamming": float(self.hamming[i, j])} if self.hamming is not None else {}),
                            **({"causal_a_minus_b": float(self.causal[i, j])} if self.causal is not None else {})})
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


def hamming_grid(lm: LoadedModel, grid_a: Grid, grid_b: Grid, pairs: list[tuple[int, int]],
                 layers: list[int]) -> np.ndarray:
    """(len(layers), len(pairs)): the fraction of block L-1's MLP neurons whose sign differs between the
    aligned tokens, i.e. the Hamming distance of their region codes over d_ff; NaN for layer 0."""
    code_a = geometry(lm, grid_a.token_ids, codes=True).codes
    code_b = geometry(lm, grid_b.token_ids, codes=True).codes
    assert code_a is not None and code_b is not None
    ia = [a for a, _ in pairs]
    ib = [b for _, b in pairs]
    out = np.full((len(layers), len(pairs)), np.nan)
    for i, layer in enumerate(layers):
        if layer > 0:
            bits = hamming(code_a[layer - 1, ia], code_b[layer - 1, ib])
            out[i] = bits / find_mlp_input(lm.arch.mlps[layer - 1]).width
    return out


def compare_prompts(ex: Explorer, prompt_a: str, prompt_b: str, layers: list[int], settings: InterpretSettings,
                    *, chat: bool = False, batch_size: int = 16, colouring: str = "readings",
                    answers: tuple[str, str] | None = None, subjects: tuple[str | None, str | None] = (None, None),
                    trace_settings: TraceSettings | None = None) -> Comparison:
    """Interpret the aligned cells of both prompts; ``colouring="hamming"`` also measures region codes, and
    ``colouring="causal"`` traces both prompts (``answers``, ``subjects``: A's and B's) and diffs the effects."""
    if colouring not in ("readings", "hamming", "causal"):
        raise InputError(f"Unknown comparison colouring '{colouring}'; use 'readings', 'hamming' or 'causal'.")
    if colouring == "causal" and not answers:
        raise InputError("Comparing causal traces needs the answer each prompt should lead to.")
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
    ham = hamming_grid(ex.lm, grid_a, grid_b, pairs, layers) if colouring == "hamming" else None
    if colouring != "causal":
        return Comparison(grid_a, grid_b, layers, pairs, text_a, text_b, differs, ham)
    assert answers is not None
    traces = tuple(trace_ids(ex.lm, list(g.token_ids), answer, subject, prompt=g.prompt, settings=trace_settings)
                   for g, answer, subject in zip((grid_a, grid_b), answers, subjects))
    ta, tb = traces
    assert ta is not None and tb is not None
    return Comparison(grid_a, grid_b, layers, pairs, text_a, text_b, differs, None, diff_traces(ta, tb, layers, pairs),
                      (ta, tb))
