"""Teaching aids around the tabs: the header (title, guide, projector view), the model-state banner
and the first-run guide.

The banner sits above the tabs, so it shows on every tab while the session changes the model (a
control edit, a concept steering, or both), with one Revert per change. When the state changes
(Apply, Steer, Revert, loading an edit or a concept, importing a session) the Explore grid is
captured again under the new model and older readings are greyed (``explorer.ui.edits``).
The projector view is remembered by the browser (``localStorage``); the grid redraws its own
text larger when it changes (``explorer.ui.grid_plot``).
"""

from __future__ import annotations

import gradio as gr

from explorer.ui import edits, explore, sharing
from explorer.ui.errors import inline
from explorer.ui.grid_plot import figure_value
from explorer.ui.session import ModelRegistry, Session

CSS = """
#sx-header { align-items: center; gap: 0.6em; flex-wrap: nowrap; }
#sx-header .sx-title { margin: 0; font-size: 1.3rem; font-weight: 700; white-space: nowrap; }
#sx-header .sx-tagline { color: #4b5563; font-size: 0.9rem; }
#sx-header .sx-header-text { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#sx-header > * { min-height: 0; }
#sx-projector, #sx-projector label { border: none !important; padding: 0 !important; background: none !important;
  box-shadow: none !important; }
#sx-projector { flex: 0 0 auto !important; width: auto !important; }
#sx-edit-banner:not(:has(.sx-banner-part)) { display: none; }
.sx-edit-banner { background: #fef3c7; border: 1px solid #f59e0b; border-radius: 6px; padding: 0.35em 0.8em; }
.sx-banner-part { margin: 0.15em 0; }
.sx-banner-note { color: #92400e; font-size: 0.85em; }
.sx-revert-part { margin-left: 0.6em; padding: 0.1em 0.7em; border-radius: 5px; border: 1px solid #b45309;
  background: #fff7ed; color: #7c2d12; cursor: pointer; font-size: 0.9em; }
.sx-stale { opacity: 0.55; filter: grayscale(1); }
.sx-stale-note { color: #92400e; font-size: 0.85em; margin-top: 0.3em; }
.sx-guide { border: 1px solid #c7d2fe; background: #eef2ff; border-radius: 8px; padding: 0.5em 0.9em;
  font-size: 0.9rem; line-height: 1.4; }
.sx-guide ol { margin: 0.3em 0 0.3em 1.2em; }
.sx-guide button { float: right; }
html.sx-projector { font-size: 22px; }
body.sx-projector { font-size: 22px; --text-xs: 16px; --text-sm: 18px; --text-md: 22px; --text-lg: 24px;
  --text-xl: 28px; --text-xxl: 32px; --block-label-text-size: 18px; --block-info-text-size: 17px;
  --button-large-text-size: 22px; --button-small-text-size: 18px; --input-text-size: 22px; }
body.sx-projector .gradio-container, body.sx-projector textarea, body.sx-projector input,
body.sx-projector button, body.sx-projector label, body.sx-projector .prose { font-size: 22px !important; }
body.sx-projector .sx-details, body.sx-projector .sx-interp { font-size: 1.5rem !important; }
body.sx-projector .sx-chip, body.sx-projector .sx-score, body.sx-projector .sx-lens { font-size: 1.2rem !important; }
body.sx-projector #sx-grid-col { flex-grow: 4 !important; }
"""

GUIDE = """<div class='sx-guide' id='sx-guide-box'>
<button class='sx-guide-close' id='sx-guide-close'
 title='Hide this guide (the Guide button above brings it back)'>Got it ✕</button>
<b>First time here? Four steps.</b>
<ol>
<li><b>The grid</b>: one <i>row</i> per layer of the model (0 = the word embeddings, the top row = the last
layer) and one <i>column</i> per token of your prompt. Each cell is a hidden state.</li>
<li><b>Click a cell</b>: the model is asked "what does this refer to?" with that state written into the
question, and answers in words (<a href='https://arxiv.org/abs/2403.10949' target='_blank'>SelfIE</a>).</li>
<li><b>The reading</b> appears here. Orange shading is <i>relevancy</i>: how much each word came
from the state rather than from the question alone. Hover a cell for its logit lens.</li>
<li><b>The Control and Concepts tabs</b> change the model for your session only; a yellow banner above the tabs
names every change, with a Revert for each.</li>
</ol>
<small>Settings: <b>K</b> = how many copies of the state go into the question; <b>k</b> = the layer where
the model reads them back; <b>strength</b> = how much of the state replaces each copy (1 = all).</small>
</div>"""

GUIDE_JS = """
const key = 'sx-guide-dismissed';
const box = () => element.querySelector('.sx-guide');
const show = (on) => { if (box()) box().style.display = on ? '' : 'none'; };
show(localStorage.getItem(key) !== '1');
element.addEventListener('click', (e) => {
  if (e.target.closest('.sx-guide-close')) { localStorage.setItem(key, '1'); show(false); }
});
window.addEventListener('sx-guide-open', () => {
  localStorage.removeItem(key); show(true);
  setTimeout(() => element.scrollIntoView({block: 'nearest'}), 50);
});
"""

OPEN_GUIDE_JS = "() => { window.dispatchEvent(new Event('sx-guide-open')); }"

# The projector view: a class on <html> and <body>, remembered by this browser; the grid listens for it.
PROJECTOR_JS = """(on) => { on = !!on; document.documentElement.classList.toggle('sx-projector', on);
  document.body.classList.toggle('sx-projector', on);
  try { localStorage.setItem('sx-projector', on ? '1' : '0'); } catch (e) {}
  window.dispatchEvent(new Event('sx-projector')); return []; }"""
PROJECTOR_LOAD_JS = "() => { try { return localStorage.getItem('sx-projector') === '1'; } catch (e) { return false; } }"

# The banner's Revert buttons call Python with the part to revert; the page title names a changed model.
BANNER_JS = """
element.addEventListener('click', (e) => {
  const b = e.target.closest('.sx-revert-part');
  if (b) { b.disabled = true; trigger('click', {part: b.dataset.part}); }
});
function title() {
  const body = element.querySelector('#sx-banner-body');
  const parts = body ? [...body.querySelectorAll('.sx-banner-part')].map(p => p.dataset.part) : [];
  document.title = parts.length ? 'SelfIE Explorer · changed model (' + parts.join(' + ') + ')' : 'SelfIE Explorer';
}
watch('value', title);
title();
"""


def build_header() -> tuple[gr.HTML, gr.Checkbox, gr.Button]:
    """One compact line (title, Guide, projector view) and the model-state banner under it."""
    with gr.Row(elem_id="sx-header", equal_height=True):
        gr.HTML("<div class='sx-header-text'><span class='sx-title'>SelfIE Explorer</span> <span class='sx-tagline'>"
                "what a language model holds at every layer and token, read in its own words</span></div>",
                scale=6, padding=False)
        guide_btn = gr.Button("Guide", size="sm", scale=0, min_width=80, elem_id="sx-guide-open")
        projector = gr.Checkbox(label="Projector view (large text)", value=False, elem_id="sx-projector",
                                scale=0, min_width=220, container=False)
    banner = gr.HTML(edits.banner_html(Session()), elem_id="sx-edit-banner", js_on_load=BANNER_JS, padding=False)
    projector.change(None, [projector], None, js=PROJECTOR_JS)
    return banner, projector, guide_btn


def build_guide() -> gr.HTML:
    """The first-run guide (beside the grid, under the reading); "Got it" hides it, Guide reopens it."""
    return gr.HTML(GUIDE, js_on_load=GUIDE_JS, elem_id="sx-guide", padding=False)


def wire_header(demo: gr.Blocks, projector: gr.Checkbox, guide_btn: gr.Button, tabs: gr.Tabs) -> None:
    """Guide reopens the guide on Explore; the projector setting comes back from this browser's memory."""
    guide_btn.click(lambda: gr.Tabs(selected="explore"), None, [tabs], js=OPEN_GUIDE_JS, queue=False)
    demo.load(None, None, [projector], js=PROJECTOR_LOAD_JS)


def edit_values(session: Session) -> tuple[str, str]:
    """The banner and the Control tab's status for the session's current model state."""
    return edits.banner_html(session), edits.control_status(session)


def revert_part(registry: ModelRegistry, session: Session, part: str) -> None:
    """Revert one change of the session's model state ("edit" or "steering")."""
    lm = registry.get(session.model).lm
    state = session.model_state
    if part == "edit":
        session.set_model_state(state.with_edit(None), lm)
    elif part == "steering":
        session.set_model_state(state.with_steering(None), lm)


def wire_model_state(registry: ModelRegistry, session: gr.State, banner: gr.HTML, control_status: gr.Markdown,
                     steer_status: gr.Markdown, explore_widgets) -> None:
    """Redraw Explore and the banner whenever the model state changes (either status line changes);
    the banner's Revert buttons revert one part each; after an import fill the prompt box."""
    w = explore_widgets

    def on_state_changed(sess: Session):
        regridded = edits.regrid_if_state_changed(registry, sess)
        view = explore.settled_view(registry, sess) if regridded else None
        if view is None:
            return edits.banner_html(sess), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        status = edits.grid_status(sess, registry.get(sess.model).lm.model_id)
        return edits.banner_html(sess), figure_value(view.figure), view.details, view.table, status

    def on_banner(sess: Session, evt: gr.EventData):
        part = getattr(evt, "part", None) or (getattr(evt, "_data", None) or {}).get("part")
        revert_part(registry, sess, str(part))
        return edits.control_status(sess), edits.steer_status(sess), edits.banner_html(sess)

    for status in (control_status, steer_status):
        # The banner first, at once (no model work); then the grid captured again under the new state.
        status.change(edits.banner_html, [session], [banner], queue=False, show_progress="hidden")
        status.change(inline(on_state_changed, 5, 4), [session], [banner, w.grid_plot, w.details, w.table, w.status],
                      concurrency_id="run", show_progress="hidden", api_visibility="private")
    banner.click(inline(on_banner, 3, 0), [session], [control_status, steer_status, banner], show_progress="hidden",
                 api_visibility="private")

    def after_import(sess: Session):
        grid = sess.grid
        if grid is None:
            return (*edit_values(sess), edits.steer_status(sess), *([gr.skip()] * (2 + len(w.view_outputs))))
        return (*edit_values(sess), edits.steer_status(sess), grid.prompt, grid.chat, *sharing.view_values(sess))

    if w.import_evt is not None:
        w.import_evt.then(after_import, [session], [banner, control_status, steer_status, w.prompt, w.chat,
                                                    *w.view_outputs], show_progress="hidden")
