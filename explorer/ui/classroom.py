"""Teaching aids around the tabs: the edit banner, the projector view and the first-run guide.

The banner sits above the tabs, so it shows on every tab while the session's control edit is
active. When the edit changes (Apply, Revert, loading an edit, importing a session) the Explore
grid is captured again under the new model and older readings are greyed (``explorer.ui.edits``).
"""

from __future__ import annotations

import gradio as gr

from explorer.ui import edits, explore
from explorer.ui.errors import friendly
from explorer.ui.grid_plot import figure_value
from explorer.ui.session import ModelRegistry, Session

CSS = """
.sx-edit-banner { background: #fef3c7; border: 1px solid #f59e0b; border-radius: 6px; padding: 0.5em 0.8em; }
.sx-stale { opacity: 0.55; filter: grayscale(1); }
.sx-stale-note { color: #92400e; font-size: 0.85rem; margin-top: 0.3em; }
.sx-guide { border: 1px solid #c7d2fe; background: #eef2ff; border-radius: 8px; padding: 0.6em 1em; }
.sx-guide ol { margin: 0.3em 0 0.3em 1.2em; }
.sx-guide button { float: right; }
body.sx-projector { font-size: 22px; }
body.sx-projector .gradio-container, body.sx-projector textarea, body.sx-projector input,
body.sx-projector button, body.sx-projector label, body.sx-projector .prose { font-size: 22px !important; }
body.sx-projector .sx-details, body.sx-projector .sx-interp { font-size: 1.5rem !important; }
body.sx-projector #sx-grid .xtick text, body.sx-projector #sx-grid .ytick text { font-size: 18px !important; }
"""

GUIDE = """<div class='sx-guide' id='sx-guide-box'>
<button class='sx-guide-close' id='sx-guide-close' title='Hide this guide for good'>Got it ✕</button>
<b>First time here? Four steps.</b>
<ol>
<li><b>The grid</b>: one <i>row</i> per layer of the model (0 = the word embeddings, the top row = the last
layer) and one <i>column</i> per token of your prompt. Each cell is a hidden state.</li>
<li><b>Click a cell</b>: the model is asked "what does this refer to?" with that state written into the
question, and answers in words.</li>
<li><b>The reading</b> appears on the right. Orange shading is <i>relevancy</i>: how much each word came
from the state rather than from the question alone.</li>
<li><b>The Control tab</b> edits the model for your session only; a yellow banner shows while an edit is
active.</li>
</ol>
<small>Settings: <b>K</b> = how many copies of the state go into the question; <b>k</b> = the layer where
the model reads them back; <b>strength</b> = how much of the state replaces each copy (1 = all).</small>
</div>"""

GUIDE_JS = """
const key = 'sx-guide-dismissed';
const box = () => element.querySelector('.sx-guide');
if (localStorage.getItem(key) === '1' && box()) box().style.display = 'none';
element.addEventListener('click', (e) => {
  if (e.target.closest('.sx-guide-close')) { localStorage.setItem(key, '1'); if (box()) box().style.display = 'none'; }
});
"""

PROJECTOR_JS = "(on) => { document.body.classList.toggle('sx-projector', !!on); return []; }"


def build_header() -> tuple[gr.HTML, gr.Checkbox]:
    """The first-run guide, the projector toggle and the edit banner (above the tabs)."""
    gr.HTML(GUIDE, js_on_load=GUIDE_JS, elem_id="sx-guide")
    with gr.Row():
        banner = gr.HTML(edits.banner_html(Session()), elem_id="sx-edit-banner")
        projector = gr.Checkbox(label="Projector view (large text)", value=False, elem_id="sx-projector",
                                scale=0, min_width=220)
    projector.change(None, [projector], None, js=PROJECTOR_JS)
    return banner, projector


def edit_values(session: Session) -> tuple[str, str]:
    """The banner and the Control tab's status for the session's current edit."""
    return edits.banner_html(session), edits.control_status(session)


def wire_edits(registry: ModelRegistry, session: gr.State, banner: gr.HTML, control_status: gr.Markdown,
               explore_widgets) -> None:
    """Redraw Explore and the banner whenever the edit changes; after an import fill the prompt box."""
    w = explore_widgets

    def on_edit_changed(sess: Session):
        regridded = edits.regrid_if_edit_changed(registry, sess)
        view = explore.settled_view(registry, sess) if regridded else None
        if view is None:
            return edits.banner_html(sess), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        status = (f"The grid was captured again with {edits.variant_name(edits.current_variant(sess))}; "
                  "readings made before are greyed until you click their cells again.")
        return edits.banner_html(sess), figure_value(view.figure), view.details, view.table, status

    # The banner first, at once (no model work); then the grid captured again under the new edit.
    control_status.change(edits.banner_html, [session], [banner], queue=False)
    control_status.change(friendly(on_edit_changed), [session], [banner, w.grid_plot, w.details, w.table, w.status],
                          concurrency_id="run")

    def after_import(sess: Session):
        grid = sess.grid
        prompt = gr.skip() if grid is None else grid.prompt
        chat = gr.skip() if grid is None else grid.chat
        return (*edit_values(sess), prompt, chat)

    if w.import_evt is not None:
        w.import_evt.then(after_import, [session], [banner, control_status, w.prompt, w.chat])
