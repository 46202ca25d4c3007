"""Three grid colour modes from the geometry pass: on-fraction, log boundary distance, intrinsic dimension.

Each cell of row L shows block L-1 (the block that produced that row's state); row 0, the
embeddings, has no block and stays blank. The pass runs once per grid and model variant (a
session's control edit makes its own), and is kept in a small LRU so redraws and paging reuse it.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict

import numpy as np

from explorer.core.grid import Grid
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel
from explorer.methods.colouring import ColourLayer, ColourMode, register_colour_mode
from explorer.methods.geometry.features import GeometryGrid, geometry

ON_SCALE = [[0.0, "#f7fcf5"], [0.5, "#74c476"], [1.0, "#00441b"]]
DISTANCE_SCALE = [[0.0, "#7f0000"], [0.5, "#fc8d59"], [1.0, "#fff7ec"]]
DIMENSION_SCALE = [[0.0, "#fcfbfd"], [0.5, "#9e9ac8"], [1.0, "#3f007d"]]
CACHE_SIZE = 16

_cache: OrderedDict[tuple, GeometryGrid] = OrderedDict()
_lock = threading.Lock()


def grid_geometry(grid: Grid, lm: LoadedModel) -> GeometryGrid:
    """The geometry of ``grid``'s prompt under the calling context's model variant (cached)."""
    key = (id(lm.model), grid.fingerprint(), MODEL_VARIANT.get())
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    g = geometry(lm, grid.token_ids)
    with _lock:
        _cache[key] = g
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return g


def _hover(grid: Grid, g: GeometryGrid, cols: list[int]) -> list[list[str]]:
    rows = []
    for layer in range(grid.n_rows):
        row = []
        for c in cols:
            head = f"<b>layer {layer} · {html.escape(repr(grid.tokens[c]))} (pos {c})</b><br>"
            if layer == 0:
                row.append(head + "row 0 is the embeddings: no block, so no geometry value")
                continue
            row.append(head + f"block {layer - 1}: MLP neurons on {g.on_fraction[layer, c]:.3f}<br>"
                       f"log boundary distance {g.log_distance[layer, c]:.3f}<br>"
                       f"attention intrinsic dimension {g.intrinsic_dim[layer, c]:.0f}")
        rows.append(row)
    return rows


def _range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def on_fraction_layer(grid: Grid, lm: LoadedModel, cols: list[int]) -> ColourLayer:
    g = grid_geometry(grid, lm)
    return ColourLayer("MLP on-fraction", g.on_fraction[:, cols], _hover(grid, g, cols), ON_SCALE, 0.0, 1.0,
                       "neurons on")


def log_distance_layer(grid: Grid, lm: LoadedModel, cols: list[int]) -> ColourLayer:
    g = grid_geometry(grid, lm)
    values = g.log_distance[:, cols]
    return ColourLayer("log boundary distance", values, _hover(grid, g, cols), DISTANCE_SCALE, *_range(values),
                       "log distance")


def intrinsic_dim_layer(grid: Grid, lm: LoadedModel, cols: list[int]) -> ColourLayer:
    g = grid_geometry(grid, lm)
    values = g.intrinsic_dim[:, cols]
    return ColourLayer("attention intrinsic dimension", values, _hover(grid, g, cols), DIMENSION_SCALE,
                       0.0, _range(values)[1], "keys attended")


_ROW0 = " Row L shows block L-1; row 0 (the embeddings) has no block and stays blank."
for _mode in (
    ColourMode("geometry_on_fraction", "MLP on-fraction (geometry)", on_fraction_layer,
               "the share of the block's MLP neurons (its gate, for a gated MLP) that are positive for this token, "
               "0 to 1." + _ROW0),
    ColourMode("geometry_log_distance", "log distance to a region boundary (geometry)", log_distance_layer,
               "the natural log of the distance from the token's MLP input to the nearest neuron's hyperplane, "
               "min_k |h_k| / ||w_k||, measured in the MLP input's own units (lower = nearer a boundary)." + _ROW0),
    ColourMode("geometry_intrinsic_dim", "attention intrinsic dimension (geometry)", intrinsic_dim_layer,
               "how many earlier keys the token attends to with at least 10% of the head's largest weight, summed "
               "over heads (a count of keys)." + _ROW0),
):
    register_colour_mode(_mode)
