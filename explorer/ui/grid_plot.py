"""A clickable Plotly heatmap for Gradio 6, with plotly.js served from the installed package.

``gr.Plot`` emits no click events in Gradio 6, so the figure is drawn by plotly.js inside a
``gr.HTML`` component: its template is a constant empty div (so Gradio's re-render never touches
what Plotly drew), ``js_on_load`` sizes the figure to the page (or wider, scrolling sideways,
so every column keeps a readable width), draws the figure and redraws it with ``Plotly.react`` whenever
the value changes (``layout.uirevision`` keeps the user's zoom), and a click on a cell is sent to
Python as a ``select`` event whose ``index`` is ``[layer, token]``. No asset comes from a CDN.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

_JS = r"""
const box = element.querySelector('.sx-plot');
const scroller = element.querySelector('.sx-scroll') || box;
let pending = null;
function figure() {
  const v = props.value;
  if (!v) return null;
  try { return typeof v === 'string' ? JSON.parse(v) : v; } catch (e) { console.error(e); return null; }
}
// The page width, or at least meta.sx_min_col_px per column (then the div scrolls sideways);
// tick labels horizontal when they fit a column, vertical otherwise (never piled up);
// colour bars placed in pixels right of the plot so they never overlap.
function sized(fig) {
  const L = fig.layout, meta = L.meta || {}, m = L.margin || {};
  const n = Math.max(1, meta.sx_n_cols || 1), minPx = meta.sx_min_col_px || 22;
  const ml = m.l || 70, mr = m.r || 190;
  const avail = Math.max(320, scroller.clientWidth || element.clientWidth || 800);
  const colPx = Math.max(minPx, (avail - ml - mr) / n);
  const width = Math.max(avail, Math.ceil(n * colPx + ml + mr));
  const labels = (L.xaxis && L.xaxis.ticktext) || [];
  const longest = labels.reduce((a, t) => Math.max(a, String(t).length), 1);
  L.width = width;
  L.autosize = false;
  if (L.xaxis) L.xaxis.tickangle = (longest * 7.5 + 8 <= colPx) ? 0 : -90;
  const plotW = width - ml - mr;
  let i = 0;
  for (const tr of fig.data) {
    if (tr.showscale && tr.colorbar) { tr.colorbar.x = 1 + (8 + 92 * i) / plotW; tr.colorbar.xanchor = 'left'; i += 1; }
  }
  box.style.width = width + 'px';
  box.dataset.colPx = String(colPx);
  return fig;
}
function draw() {
  const fig = figure();
  if (!window.Plotly) { pending = setTimeout(draw, 50); return; }
  if (!fig) { window.Plotly.purge(box); box.style.width = ''; box.dataset.ready = '0';
      box.innerHTML = '<div class="sx-plot-empty">' + (box.dataset.empty || '') + '</div>'; return; }
  const empty = box.querySelector('.sx-plot-empty');
  if (empty) empty.remove();
  sized(fig);
  window.Plotly.react(box, fig.data, fig.layout, {displaylogo: false, responsive: false,
      modeBarButtonsToRemove: ['select2d', 'lasso2d']}).then(() => {
    box.dataset.ready = '1';
    box.dataset.revision = String((Number(box.dataset.revision) || 0) + 1);
    if (!box._sxBound) {
      box._sxBound = true;
      box.on('plotly_click', (ev) => {
        if (!ev || !ev.points || !ev.points.length) return;
        const p = ev.points[0];
        const layer = Math.round(Number(p.y)), token = Math.round(Number(p.x));
        box.dataset.lastClick = layer + ',' + token;
        trigger('select', {index: [layer, token], value: {layer: layer, token: token}});
      });
    }
  });
}
let resizeTimer = null;
window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(draw, 150); });
box.dataset.empty = element.dataset.empty || 'Run a prompt to draw the grid.';
watch('value', draw);
draw();
"""

_CSS = """
.sx-scroll { width: 100%; overflow-x: auto; overflow-y: hidden; }
.sx-plot { width: 100%; min-height: 120px; }
.sx-plot-empty { padding: 2.5em 1em; color: #6b7280; text-align: center; border: 1px dashed #d1d5db;
  border-radius: 8px; }
"""


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the installed ``plotly`` Python package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall plotly.")
    return path


def head_html() -> str:
    """The ``<script>`` tag loading plotly.js from the app's own server (no CDN)."""
    path = plotly_js_path()
    gr.set_static_paths([str(path.parent)])
    return f'<script src="/gradio_api/file={path}"></script>'


def figure_value(fig: dict | None) -> str:
    """The component's value for a Plotly figure dict (None clears the plot)."""
    return "" if fig is None else json.dumps(fig, separators=(",", ":"), allow_nan=False, default=_plain)


def _plain(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def GridPlot(elem_id: str = "sx-grid", **kwargs) -> gr.HTML:
    """The clickable heatmap component; wire clicks with ``.select(fn)`` where ``fn(evt: gr.SelectData)``
    gets ``evt.index == [layer, token]``; set figures with :func:`figure_value`."""
    return gr.HTML(
        value="",
        html_template="<div class='sx-scroll'><div class='sx-plot'></div></div>",
        css_template=_CSS,
        js_on_load=_JS,
        head=head_html(),
        elem_id=elem_id,
        apply_default_css=False,
        **kwargs,
    )
