"""The Explore tab: its handlers (``ExploreHandlers``, each a thin call into ``explorer.ui.explore``)
and their wiring; the widgets are laid out in ``explorer.ui.explore_layout``.

A failure in the tab is shown in its message line, right above the grid's buttons (``errors.inline``),
never as an error badge on the outputs or a notice that vanishes. The API's own endpoints (``run``
and those in ``api_endpoints``) raise instead, so programs get an error.
"""

from __future__ import annotations

import html

import gradio as gr

from explorer.core.errors import ExplorerError, InputError
from explorer.core.prompts import PRESETS
from explorer.methods.session_io import copy_as_python, export_session
from explorer.ui import explore, grid_view, sharing, validate
from explorer.ui.causal_fields import wire_causal_fields
from explorer.ui.errors import friendly, inline, message_html
from explorer.ui.explore_layout import ExploreWidgets, build_layout
from explorer.ui.grid_plot import figure_value
from explorer.ui.session import AppConfig, ModelRegistry, Session
from explorer.viz.figure import MAX_COLUMNS


def settings_record(settings, values: list, batch_size: int) -> dict:
    """The settings a session remembers (and exports) for its readings."""
    preset_v, user_v, lead_v = values[0], values[1], values[2]
    return {"template": preset_v if preset_v != "custom" else f"{user_v}|{lead_v}",
            "n_placeholders": settings.n_placeholders, "k": settings.k, "max_new_tokens": settings.max_new_tokens,
            "strength": settings.strength, "batch_size": batch_size}


class ExploreHandlers:
    """The Explore tab's event handlers, over one model registry and app configuration."""

    def __init__(self, registry: ModelRegistry, config: AppConfig):
        self.registry = registry
        self.config = config

    def settings_of(self, sess: Session, values: list):
        ex = self.registry.get(sess.model)
        return ex, explore.settings_from_ui(ex, *values)

    def on_load(self, model_spec: str, sess: Session, progress=gr.Progress()):
        model_spec = validate.as_text("model", model_spec, 500)
        progress(0.1, desc="loading the model")
        try:
            ex = self.registry.get(model_spec)
        except ExplorerError as e:  # keep the picker on the model that works, so Run keeps working
            return (f"{message_html(str(e))} Still using **{html.escape(sess.model)}**.", gr.skip(),
                    gr.update(value=sess.model))
        sess.model = model_spec
        n = ex.lm.n_layers
        return (f"Loaded **{ex.lm.model_id}**: {n} blocks, hidden size {ex.lm.hidden_size}, "
                f"{ex.lm.dtype}, {ex.lm.device}.", gr.update(maximum=n - 1, value=min(1, n - 1)), gr.skip())

    def on_run(self, model_spec: str, text: str, wrap: bool, hide: bool, sess: Session, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        sess.hide_system = bool(hide)
        view = explore.run_prompt(self.registry, sess, model_spec, text, wrap)
        return (figure_value(view.figure), view.details, view.table, view.status, self.page_update(sess), "")

    def page_update(self, sess: Session):
        """The window slider: shown only when the tokens on view exceed what is drawn at once (its
        range then ends where the window's last column is the prompt's last token)."""
        grid = sess.grid
        if grid is None:
            return gr.update(visible=False)
        floor = grid_view.column_floor(self.registry.get(sess.model), sess)
        last_start = grid.n_tokens - MAX_COLUMNS
        if last_start <= floor:
            return gr.update(visible=False)
        return gr.update(visible=True, minimum=floor, maximum=last_start, value=floor)

    def stream(self, sess: Session, cells, focus, batch_size, values, progress=None, scope=None):
        _ex, settings = self.settings_of(sess, values)
        bs = explore._as_int("batch size", batch_size, 1, 64)
        sess.settings = settings_record(settings, values, bs)
        # A click while a job runs leaves the status line and the job's bar to that job (no flicker).
        quiet = scope is None and sess.active_jobs > 0
        cb = None
        if progress is not None:
            def cb(done, total, desc):
                progress((done, total), desc=desc)
        for view in explore.interpret_cells(self.registry, sess, cells, settings, batch_size=bs, focus=focus,
                                            progress=cb, time_limit_s=self.config.job_time_limit_s, scope=scope):
            out = (_or_skip(view.figure, figure_value), _or_skip(view.details), _or_skip(view.table),
                   gr.skip() if quiet else _or_skip(view.status))
            yield (*out, view.progress) if scope is not None else out

    def on_click(self, sess: Session, batch_size, preset_v, user_v, lead_v, n_ph, k_v, max_new_v, strength_v,
                 evt: gr.SelectData):
        values = [preset_v, user_v, lead_v, n_ph, k_v, max_new_v, strength_v]
        index = getattr(evt, "index", None)
        if not isinstance(index, (list, tuple)) or len(index) != 2:
            raise InputError("Click a cell of the grid.")
        layer, token = explore._as_int("layer", index[0], 0), explore._as_int("token", index[1], 0)
        sess.require_grid().check_cell(layer, token)
        sess.selected = (layer, token)
        sess.reading_list = None
        yield from self.stream(sess, [(layer, token)], (layer, token), batch_size, values)

    def on_scope(self, scope: str):
        def handler(sess: Session, batch_size, *values):
            cells = explore.scope_cells(sess.require_grid(), scope, sess.selected, self.config.max_cells_per_job)
            sess.reading_list = (scope, cells)
            yield from self.stream(sess, cells, sess.selected, batch_size, list(values), scope=scope)
        return inline(handler, 5, 3)

    def on_settle(self, sess: Session):
        view = explore.settled_view(self.registry, sess)
        if view is None:
            return gr.skip(), gr.skip(), gr.skip()
        return figure_value(view.figure), view.details, view.table

    def on_stop(self, sess: Session):
        if sess.stop_jobs() == 0:
            return "Nothing is running."
        return "Stopping after the current batch; what was read is kept…"

    def on_page(self, start, sess: Session):
        if sess.grid is None:
            return gr.skip()
        sess.column_start = explore._as_int("first token shown", start, 0, max(0, sess.grid.n_tokens - 1))
        return figure_value(explore.figure_for(self.registry.get(sess.model), sess))

    def on_hide(self, hide: bool, sess: Session):
        sess.hide_system = bool(hide)
        sess.column_start = 0
        if sess.grid is None:
            return gr.skip(), gr.skip()
        return figure_value(explore.figure_for(self.registry.get(sess.model), sess)), self.page_update(sess)

    def on_colour(self, mode: str, sess: Session, after_run: bool = False):
        """Recolour the grid; token identity streams its progress beside the grid's buttons and stops with
        Stop. After a Run only a colouring still to compute is run (the grid is already drawn). Outputs:
        the grid, the progress bar, the colour's explanation and the message line."""
        if not isinstance(mode, str) or grid_view.usable_colour_mode(sess, mode) != mode:
            raise InputError("That colour mode is not available: pick one from the menu (a concept must be "
                             "trained or loaded in the Concepts tab first).")
        sess.colour_mode = mode
        help_text = grid_view.colour_help(sess)
        if sess.grid is None or (after_run and not grid_view.colour_pending(self.registry, sess)):
            yield gr.skip(), gr.skip(), help_text, gr.skip()
            return
        for fig, bar in grid_view.colour_job(self.registry, sess):
            yield (gr.skip() if fig is None else figure_value(fig)), bar, help_text, gr.skip()

    def on_colour_after_run(self, mode: str, sess: Session):
        yield from self.on_colour(mode, sess, after_run=True)

    @staticmethod
    def on_preset(preset: str):
        """A preset's own text in the fields ('custom' keeps what is there)."""
        if preset not in PRESETS:
            return gr.skip(), gr.skip()
        return PRESETS[preset].user, PRESETS[preset].lead_in

    def on_share(self, sess: Session):
        path = sess.workdir() / "selfie_session.json"
        path.write_text(export_session(sharing.snapshot(sess)), encoding="utf-8")
        return gr.update(value=str(path), visible=True), gr.skip()

    def on_import(self, sess: Session, file, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        text = validate.read_upload_text(file, (".json",))  # size checked on disk first, then deleted
        view = sharing.restore(self.registry, sess, text)
        return figure_value(view.figure), view.details, view.table, view.status

    def on_python(self, sess: Session):
        return gr.update(value=copy_as_python(sharing.snapshot(sess)), visible=True), gr.skip()

    def on_export(self, sess: Session):
        paths = sharing.export_files(self.registry.get(sess.model), sess)
        return (*(gr.update(value=p, visible=True) for p in paths), gr.skip())


def _or_skip(value, fn=None):
    if value is None:
        return gr.skip()
    return fn(value) if fn is not None else value


def _wire(w: ExploreWidgets, h: ExploreHandlers, session: gr.State) -> None:
    """Connect the widgets' events to the handlers (queues and concurrency limits set here). The page's own
    events are private and show their failures in the message line; ``run`` is also a public endpoint
    for programs (a hidden button), which raises."""
    private = {"api_visibility": "private"}
    w.load_btn.click(inline(h.on_load, 3, 0), [w.model, session], [w.status, w.k, w.model], concurrency_limit=1,
                     concurrency_id="load", **private)
    run_outputs = [w.grid_plot, w.details, w.table, w.status, w.page, w.job_progress]
    run_evt = dict(fn=inline(h.on_run, 6, 3), inputs=[w.model, w.prompt, w.chat, w.hide_system, session],
                   outputs=run_outputs, concurrency_limit=4, concurrency_id="run")
    colour_outputs = [w.grid_plot, w.job_progress, w.colour_help, w.status]
    recolour = dict(fn=inline(h.on_colour, 4, 3), inputs=[w.colour, session], outputs=colour_outputs,
                    concurrency_id="run", **private)
    after_run = dict(recolour, fn=inline(h.on_colour_after_run, 4, 3), show_progress="hidden")
    w.run_btn.click(**run_evt, **private).success(**after_run)
    w.prompt.submit(**run_evt, **private).success(**after_run)
    api_run = gr.Button(visible=False)
    api_run.click(friendly(h.on_run), run_evt["inputs"], run_outputs, api_name="run", concurrency_limit=4,
                  concurrency_id="run")
    w.hide_system.input(friendly(h.on_hide), [w.hide_system, session], [w.grid_plot, w.page], **private)
    w.preset.input(h.on_preset, [w.preset], [w.custom_user, w.custom_lead], queue=False)
    for field in (w.custom_user, w.custom_lead):
        field.input(lambda: "custom", None, [w.preset], queue=False)
    settle = dict(fn=friendly(h.on_settle), inputs=[session], outputs=[w.grid_plot, w.details, w.table], queue=False)
    w.grid_plot.select(inline(h.on_click, 4, 3), [session, w.batch, *w.settings_inputs], w.interp_outputs,
                       concurrency_limit=8, concurrency_id="click", trigger_mode="multiple", **private).then(**settle)
    for btn, scope in ((w.row_btn, "row"), (w.col_btn, "column"), (w.all_btn, "grid")):
        btn.click(h.on_scope(scope), [session, w.batch, *w.settings_inputs], [*w.interp_outputs, w.job_progress],
                  concurrency_limit=4, concurrency_id="scope", show_progress="hidden", **private).then(**settle)
    w.stop_btn.click(h.on_stop, [session], [w.status], queue=False)
    w.page.release(friendly(h.on_page), [w.page, session], [w.grid_plot])
    w.export_btn.click(inline(h.on_export, 4, 3), [session], [w.csv_file, w.json_file, w.html_file, w.status],
                       **private)
    w.colour.input(**recolour, trigger_mode="always_last")  # only the last choice matters
    # A shared link describes the view it was made for: once another prompt runs, it goes (and gives the
    # grid its room back).
    for trigger in (w.run_btn.click, w.prompt.submit):
        trigger(lambda: gr.update(visible=False), None, [w.gallery.link], queue=False, **private)
    w.share_btn.click(inline(h.on_share, 2, 1), [session], [w.share_file, w.status], **private)
    w.import_evt = w.import_file.upload(inline(h.on_import, 4, 3), [session, w.import_file], w.interp_outputs,
                                        **private)
    w.py_btn.click(inline(h.on_python, 2, 1), [session], [w.py_code, w.status], **private)


def build_explore_tab(registry: ModelRegistry, session: gr.State, config: AppConfig) -> ExploreWidgets:
    """Lay out and wire the Explore tab (inside ``gr.Blocks``)."""
    widgets = build_layout(config)
    _wire(widgets, ExploreHandlers(registry, config), session)
    wire_causal_fields(widgets.causal, widgets.colour, widgets.grid_plot, widgets.job_progress, session, registry)
    return widgets
