"""The grid's colour mode "causal effect on the answer", and the difference of two prompts' traces.

The mode needs an answer (and optionally a subject) from the user, so its registered layer draws
nothing by itself: the app computes the trace for the user's grid and colours it with
:func:`trace_layer`. The colour bar's title carries p_clean and p_corrupted.
"""

from __future__ import annotations

import numpy as np

from explorer.methods.colouring import ColourLayer, ColourMode, register_colour_mode
from explorer.methods.tracing.result import EFFECT_SCALE, CausalTrace, cell_hover, effect_span

CAUSAL_MODE = "causal"
CAUSAL_LABEL = "causal effect on the answer"


def trace_layer(trace: CausalTrace, cols: list[int]) -> ColourLayer:
    """The trace's effect for the columns ``cols``, on a diverging scale symmetric around 0."""
    span = effect_span(trace.effect)
    hover = [[cell_hover(trace, row, c) for c in cols] for row in range(trace.n_rows)]
    return ColourLayer(CAUSAL_LABEL, trace.effect[:, cols].astype(float), hover, EFFECT_SCALE, -span, span,
                       trace.legend())


def diff_traces(a: CausalTrace, b: CausalTrace, layers: list[int], pairs: list[tuple[int, int]]) -> np.ndarray:
    """(len(layers), len(pairs)): effect in A minus effect in B at aligned tokens ``pairs`` = (token in A, token in B)."""
    ia = [i for i, _ in pairs]
    ib = [j for _, j in pairs]
    return a.effect[np.ix_(layers, ia)] - b.effect[np.ix_(layers, ib)]


register_colour_mode(ColourMode(CAUSAL_MODE, CAUSAL_LABEL, lambda grid, lm, cols: None))
