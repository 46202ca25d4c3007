"""The gallery row at the top of Explore, the page-load handler that opens an entry, and share links.

The page opens on ``?session=ID`` (a session shared through "Share a link"), on ``?gallery=NAME``,
empty with ``?gallery=none``, or else on the first gallery entry, already drawn with its stored readings.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import gradio as gr

from explorer.core.errors import InputError
from explorer.ui import gallery, sharing
from explorer.ui.classroom import edit_values
from explorer.ui.errors import friendly, inline
from explorer.ui.grid_plot import figure_value
from explorer.ui.session import ModelRegistry, Session


@dataclass
class GalleryWidgets:
    picker: gr.Dropdown
    about: gr.Markdown
    link_btn: gr.Button
    link: gr.Textbox
    loaded: gr.HTML  # says the page-load handler has finished (a signal for scripts and tests)
    page_url: gr.Textbox  # the page's own address, as the browser shows it (for share links)


LOADED = "<span data-loaded='1'></span>"
PAGE_URL_JS = "() => window.location.href"


def _about(entry: gallery.GalleryEntry) -> str:
    return f"{entry.explanation} <small>(link: `?gallery={entry.name}`)</small>"


def build_gallery_controls() -> GalleryWidgets:
    """The gallery picker (rendered here, inside the caller's row); its explanation, the "Share a link"
    button, the link box, the page-loaded signal and the page address are made for the caller to place."""
    items = gallery.entries()
    gr.HTML("<span class='sx-inline-label'>Gallery</span>", scale=0, min_width=50, padding=False)
    picker = gr.Dropdown([(e.title, e.name) for e in items], value=items[0].name if items else None,
                         label="Gallery: worked examples", show_label=False, container=False, scale=3,
                         min_width=220, elem_id="sx-gallery-pick")
    about = gr.Markdown(_about(items[0]) if items else "", elem_id="sx-gallery-about", render=False)
    link_btn = gr.Button("Share a link to this view", size="sm", scale=0, min_width=170, elem_id="sx-share-link",
                         render=False)
    link = gr.Textbox(label="Link to this view", visible=False, elem_id="sx-link", interactive=False,
                      buttons=["copy"], render=False, scale=2)
    loaded = gr.HTML("<span data-loaded='0'></span>", elem_id="sx-page-loaded", padding=False, render=False)
    page_url = gr.Textbox("", visible=False, elem_id="sx-page-url", render=False)
    return GalleryWidgets(picker, about, link_btn, link, loaded, page_url)


def page_url(reported: str | None, request: gr.Request | None) -> str:
    """The address of the page itself (never the queue's): what the browser reported (scheme, host and path
    only), else the request's Referer, else the request's own address without Gradio's API path."""
    for candidate in (reported, _header(request, "referer")):
        if isinstance(candidate, str) and len(candidate) < 2000:
            parts = urllib.parse.urlsplit(candidate.strip())
            if parts.scheme in ("http", "https") and parts.netloc:
                return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    url = getattr(getattr(request, "request", None), "url", None) if request is not None else None
    if url is None:
        return ""
    base = str(url).split("?", 1)[0]
    return base.split("/gradio_api/", 1)[0].rstrip("/") + "/"


def _header(request: gr.Request | None, name: str) -> str | None:
    headers = getattr(request, "headers", None) if request is not None else None
    try:
        return headers.get(name) if headers is not None else None
    except Exception:
        return None


def wire_gallery(g: GalleryWidgets, w, registry: ModelRegistry, session: gr.State, demo: gr.Blocks,
                 banner: gr.HTML, control_status: gr.Markdown) -> None:
    """Open entries from the dropdown and on page load (honouring ``?gallery=`` and ``?session=``)."""
    outputs = [w.grid_plot, w.details, w.table, w.status, w.prompt, w.chat, g.about, g.picker, banner,
               control_status, *w.view_outputs]

    def shown(sess: Session, view, entry: gallery.GalleryEntry | None):
        grid = sess.grid
        return (figure_value(view.figure), view.details, view.table, view.status,
                grid.prompt if grid is not None else gr.skip(), grid.chat if grid is not None else gr.skip(),
                _about(entry) if entry is not None else gr.skip(),
                entry.name if entry is not None else gr.skip(), *edit_values(sess), *sharing.view_values(sess))

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

    def on_link(sess: Session, reported: str, request: gr.Request):
        if sess.grid is None:
            raise InputError("Run a prompt or open a gallery entry first: there is nothing to share.")
        share_id = gallery.save_shared(sess)
        link = f"{page_url(reported, request)}?session={share_id}"
        return gr.update(value=link, visible=True), "Link ready: it opens this view (same cell, colours and settings)."

    g.picker.input(inline(on_pick, len(outputs), 3), [g.picker, session], outputs, concurrency_id="run",
                   api_visibility="private")
    demo.load(None, None, [g.page_url], js=PAGE_URL_JS)
    demo.load(friendly(on_page_load), [session], [*outputs, g.loaded], concurrency_id="run")
    g.link_btn.click(inline(on_link, 2, 1), [session, g.page_url], [g.link, w.status], api_visibility="private")
