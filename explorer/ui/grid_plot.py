"""A clickable Plotly heatmap for Gradio 6, with plotly.js served from the installed package.

``gr.Plot`` emits no click events in Gradio 6, so the figure is drawn by plotly.js inside a
``gr.HTML`` component: its template is a constant empty div (so Gradio's re-render never touches
what Plotly drew), ``js_on_load`` sizes the figure to the page (or wider, scrolling sideways,
so every column keeps a readable width; as tall as the first screen allows), draws the figure and
redraws it with ``Plotly.react`` whenever the value changes (``layout.uirevision`` keeps the user's
zoom) or the projector view is switched (every text of the figure then grows), and a click on a cell
is sent to Python as a ``select`` event whose ``index`` is ``[layer, token]``. While the grid is
scrolled sideways a frozen copy of the layer axis stays on its left edge. No mode bar (it covered
the top-right cells), and no asset comes from a CDN.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

_JS = r"""
const box = element.querySelector('.sx-plot');
const scroller = element.querySelector('.sx-scroll') || box;
const yaxis = element.querySelector('.sx-yaxis');
let pending = null;
let lastTop = null;  // where the grid's top was when it was last sized (it is sized to end at the screen's bottom)
function figure() {
  const v = props.value;
  if (!v) return null;
  try { return typeof v === 'string' ? JSON.parse(v) : v; } catch (e) { console.error(e); return null; }
}
function projector() { return document.body.classList.contains('sx-projector'); }
// Sizes in the browser: the page width, or at least meta.sx_min_col_px per column (then the div scrolls
// sideways); the height fits the first screen below the grid's top (never below a readable row);
// tick labels flat when they fit a column, upright otherwise (never piled up), every n-th row labelled
// so row labels never overlap; colour bars placed in pixels right of the plot; in the projector view
// every text of the figure (ticks, titles, colour bars, hovers) and the rows and columns grow.
function sized(fig) {
  const L = fig.layout, meta = L.meta || {}, m = Object.assign({}, L.margin || {});
  const s = projector() ? 1.5 : 1;
  const n = Math.max(1, meta.sx_n_cols || 1), minPx = (meta.sx_min_col_px || 22) * s;
  const rows = Math.max(1, meta.sx_n_rows || ((L.yaxis && L.yaxis.range) ? Math.round(L.yaxis.range[1] + 0.5) : 1));
  const m0l = m.l || 70, m0r = m.r || 190;
  const ml = Math.round(m0l * s), mr = Math.round(m0r * s);
  L.margin = Object.assign(m, {l: ml, r: mr, t: Math.round((m.t || 16) * s)});
  const avail = Math.max(320, scroller.clientWidth || element.clientWidth || 800);
  // In the projector view columns grow with the text: at least s times what the page view would give them
  // (the grid then scrolls sideways, its layer axis frozen on the left).
  const plain = (avail - m0l - m0r) / n;
  const colPx = Math.max(minPx, (avail - ml - mr) / n, s > 1 ? s * plain : 0);
  const width = Math.max(avail, Math.ceil(n * colPx + ml + mr));
  const labels = (L.xaxis && L.xaxis.ticktext) || [];
  const longest = labels.reduce((a, t) => Math.max(a, String(t).length), 1);
  const font = 12 * s;
  L.width = width;
  L.autosize = false;
  L.font = Object.assign({}, L.font || {}, {size: font});
  L.hoverlabel = Object.assign({}, L.hoverlabel || {}, {font: {size: Math.round(13 * s)}});
  const flat = longest * 7.5 * s + 8 <= colPx;
  // Upright labels take their own height below the plot; the axis title goes below them.
  const labelPx = flat ? font + 6 : Math.min(14, longest) * 7.2 * s + 6;
  const top = element.getBoundingClientRect().top + window.scrollY;
  lastTop = top;
  const natural = rows * 18 * s + L.margin.t + labelPx + 40 * s;
  const least = rows * 7 * s + L.margin.t + labelPx + 40 * s;
  const fits = window.innerHeight - (top > 0 ? top : 0) - 12;
  L.height = Math.round(Math.max(least, Math.min(natural, fits)));
  L.margin.b = Math.round(labelPx + 36 * s);
  if (L.xaxis) {
    L.xaxis.tickangle = flat ? 0 : -90;
    L.xaxis.tickfont = {size: font};
    L.xaxis.automargin = true;
    L.xaxis.title = Object.assign({}, L.xaxis.title || {}, {font: {size: 13 * s}, standoff: 6 * s});
  }
  if (L.yaxis) {
    const rowPx = (L.height - L.margin.t - L.margin.b) / rows;
    const step = Math.max(1, Math.ceil((font + 3) / Math.max(1, rowPx)));
    const ticks = [];
    for (let r = 0; r < rows; r += step) ticks.push(r);
    L.yaxis.tickmode = 'array';
    L.yaxis.tickvals = ticks;
    L.yaxis.ticktext = ticks.map(String);
    L.yaxis.tickfont = {size: font};
    L.yaxis.title = Object.assign({}, L.yaxis.title || {}, {font: {size: 13 * s}});
  }
  const plotW = width - ml - mr;
  let i = 0;
  for (const tr of fig.data) {
    if (tr.showscale && tr.colorbar) {
      tr.colorbar.x = 1 + (8 + 92 * s * i) / plotW; tr.colorbar.xanchor = 'left'; i += 1;
      tr.colorbar.tickfont = {size: 11 * s};
      tr.colorbar.title = Object.assign({}, tr.colorbar.title || {}, {font: {size: 11 * s}});
    }
  }
  box.style.width = width + 'px';
  box.dataset.colPx = String(colPx);
  box.dataset.scale = String(s);
  return fig;
}
// The layer axis, drawn again in a frozen column over the left edge while the grid is scrolled sideways.
function frozenAxis() {
  if (!yaxis) return;
  const L = box._fullLayout;
  if (!L || !L.yaxis || box.dataset.ready !== '1') { yaxis.innerHTML = ''; yaxis.style.display = 'none'; return; }
  const shift = scroller.scrollLeft || 0;
  const scrolled = shift > 2 && scroller.scrollWidth > scroller.clientWidth;
  yaxis.style.width = L._size.l + 'px';
  yaxis.style.height = L.height + 'px';
  const title = (L.yaxis.title && L.yaxis.title.text) || '';
  const size = (L.yaxis.tickfont && L.yaxis.tickfont.size) || 12;
  let html = '<div class="sx-ytitle" style="font-size:' + size + 'px">' + title + '</div>';
  for (const v of (L.yaxis.tickvals || [])) {
    const y = L._size.t + L.yaxis.l2p(v);
    html += '<div class="sx-ytick" data-layer="' + v + '" style="top:' + (y - size * 0.65) + 'px;font-size:'
      + size + 'px">' + v + '</div>';
  }
  yaxis.innerHTML = html;
  yaxis.style.display = scrolled ? 'block' : 'none';
  yaxis.dataset.shown = scrolled ? '1' : '0';
}
scroller.addEventListener('scroll', frozenAxis, {passive: true});
function draw() {
  const fig = figure();
  if (!window.Plotly) { pending = setTimeout(draw, 50); return; }
  if (!fig) { window.Plotly.purge(box); box.style.width = ''; box.dataset.ready = '0'; frozenAxis();
      box.innerHTML = '<div class="sx-plot-empty">' + (box.dataset.empty || '') + '</div>'; return; }
  const empty = box.querySelector('.sx-plot-empty');
  if (empty) empty.remove();
  sized(fig);
  // No mode bar: it covered the top-right cells (zoom: drag; double-click resets).
  window.Plotly.react(box, fig.data, fig.layout, {displaylogo: false, responsive: false,
      displayModeBar: false}).then(() => {
    box.dataset.ready = '1';
    box.dataset.revision = String((Number(box.dataset.revision) || 0) + 1);
    frozenAxis();
    if (!box._sxBound) {
      box._sxBound = true;
      box.on('plotly_click', (ev) => {
        if (!ev || !ev.points || !ev.points.length) return;
        const p = ev.points[0];
        const layer = Math.round(Number(p.y)), token = Math.round(Number(p.x));
        box.dataset.lastClick = layer + ',' + token;
        trigger('select', {index: [layer, token], value: {layer: layer, token: token}});
      });
      box.on('plotly_relayout', frozenAxis);
    }
  });
}
let resizeTimer = null;
window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(draw, 150); });
window.addEventListener('sx-projector', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(draw, 30); });
// The layout above the grid settles after the first draw (an explanation, a banner): size it again if its top moved.
new ResizeObserver(() => {
  if (box.dataset.ready !== '1' || lastTop === null || !element.getBoundingClientRect().height) return;
  const t = element.getBoundingClientRect().top + window.scrollY;
  if (Math.abs(t - lastTop) > 6) { clearTimeout(resizeTimer); resizeTimer = setTimeout(draw, 60); }
}).observe(document.body);
box.dataset.empty = element.dataset.empty || 'Run a prompt to draw the grid.';
watch('value', draw);
draw();
"""

_CSS = """
.sx-wrap { position: relative; }
.sx-scroll { width: 100%; overflow-x: auto; overflow-y: hidden; }
.sx-plot { width: 100%; min-height: 120px; }
.sx-plot-empty { padding: 2.5em 1em; color: #6b7280; text-align: center; border: 1px dashed #d1d5db;
  border-radius: 8px; }
.sx-yaxis { position: absolute; left: 0; top: 0; display: none; background: rgba(255, 255, 255, 0.96);
  border-right: 1px solid #d1d5db; box-shadow: 3px 0 4px rgba(0, 0, 0, 0.08); pointer-events: none; z-index: 2; }
.sx-ytick { position: absolute; right: 6px; color: #444; line-height: 1.3; }
.sx-ytitle { position: absolute; left: 2px; top: 50%; transform: translateY(-50%) rotate(180deg);
  writing-mode: vertical-rl; color: #444; white-space: nowrap; }
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
        html_template=("<div class='sx-wrap'><div class='sx-scroll'><div class='sx-plot'></div></div>"
                       "<div class='sx-yaxis' aria-hidden='true'></div></div>"),
        css_template=_CSS,
        js_on_load=_JS,
        head=head_html(),
        elem_id=elem_id,
        apply_default_css=False,
        **kwargs,
    )
