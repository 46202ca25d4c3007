"""The gallery row at the top of Explore, the page-load handler that opens an entry, and share links.

The page opens on ``?session=ID`` (a session shared through "Share a link"), on ``?gallery=NAME``,
empty with ``?gallery=none``, or else on the first gallery entry, already drawn with its stored readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from explorer.core.errors import InputError
from explorer.ui import gallery
from explorer.ui.classroom import edit_values
from explorer.ui.errors import friendly
from explorer.ui.grid_plot import figure_value
from explorer.ui.session import ModelRegistry, Session


@dataclass
class GalleryWidgets:
    picker: gr.Dropdown
    about: gr.Markdown
    link_btn: gr.Button
    link: gr.Textbox
    loaded: gr.HTML  # says the page-load handler has finished (a signal for scripts and tests)


LOADED = "<span data-loaded='1'></span>"


def _about(entry: gallery.GalleryEntry) -> str:
    return f"{entry.explanation} <small>(link: `?gallery={entry.name}`)</small>"


def build_gallery_row() -> GalleryWidgets:
    """A dropdown of worked examples with their explanation, and a "Share a link" button."""
    items = gallery.entries()
    with gr.Row(elem_id="sx-gallery"):
        picker = gr.Dropdown([(e.title, e.name) for e in items], value=items[0].name if items else None,
                             label="Gallery: worked examples", scale=2, elem_id="sx-gallery-pick",
                             info="each opens instantly with its saved readings")
        about = gr.Markdown(_about(items[0]) if items else "", elem_id="sx-gallery-about")
        with gr.Column(scale=1, min_width=180):
            link_btn = gr.Button("Share a link to this view", elem_id="sx-share-link")
            link = gr.Textbox(label="Link", visible=False, elem_id="sx-link", interactive=False)
    loaded = gr.HTML("<span data-loaded='0'></span>", elem_id="sx-page-loaded", padding=False)
    return GalleryWidgets(picker, about, link_btn, link, loaded)


def _page_url(request: gr.Request | None) -> str:
    url = getattr(getattr(request, "request", None), "url", None) if request is not None else None
    if url is None:
        return ""
    return str(url).split("?", 1)[0]


def wire_gallery(g: GalleryWidgets, w, registry: ModelRegistry, session: gr.State, demo: gr.Blocks,
                 banner: gr.HTML, control_status: gr.Markdown) -> None:
    """Open entries from the dropdown and on page load (honouring ``?gallery=`` and ``?session=``)."""
    outputs = [w.grid_plot, w.details, w.table, w.status, w.prompt, w.chat, g.about, g.picker, banner,
               control_status]

    def shown(sess: Session, view, entry: gallery.GalleryEntry | None):
        grid = sess.grid
        return (figure_value(view.figure), view.details, view.table, view.status,
                grid.prompt if grid is not None else gr.skip(), grid.chat if grid is not None else gr.skip(),
                _about(entry) if entry is not None else gr.skip(),
                entry.name if entry is not None else gr.skip(), *edit_values(sess))

    def on_pick(name: str, sess: Session, request: gr.Request):
        if not name:
            return tuple(gr.skip() for _ in outputs)
        registry.bind(getattr(request, "session_hash", None), sess)
        entry, view = gallery.open_entry(registry, sess, name)
        return shown(sess, view, entry)

    def on_page_load(sess: Session, request: gr.Request):
        return (*opened_on_load(sess, request), LOADED)

    def opened_on_load(sess: Session, request: gr.Request):
        params = dict(getattr(request, "query_params", {}) or {})
        registry.bind(getattr(request, "session_hash", None), sess)
        note = ""
        if params.get("gallery") == "none":  # an empty page (a lesson that starts from its own prompt)
            return tuple(gr.skip() for _ in outputs)
        try:
            if params.get("session"):
                return shown(sess, gallery.open_shared(registry, sess, params["session"]), None)
            if params.get("gallery"):
                entry, view = gallery.open_entry(registry, sess, params["gallery"])
                return shown(sess, view, entry)
        except InputError as e:
            note = f"{e} "
        items = gallery.entries()
        if not items:
            return tuple(gr.skip() for _ in outputs)
        entry, view = gallery.open_entry(registry, sess, items[0].name)
        view.status = note + view.status
        return shown(sess, view, entry)

    def on_link(sess: Session, request: gr.Request):
        if sess.grid is None:
            raise InputError("Run a prompt or open a gallery entry first: there is nothing to share.")
        share_id = gallery.save_shared(sess)
        return gr.update(value=f"{_page_url(request)}?session={share_id}", visible=True)

    g.picker.input(friendly(on_pick), [g.picker, session], outputs, concurrency_id="run")
    demo.load(friendly(on_page_load), [session], [*outputs, g.loaded], concurrency_id="run")
    g.link_btn.click(friendly(on_link), [session], [g.link])
