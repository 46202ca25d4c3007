"""The Explore tab: widgets, and the handlers that connect them to ``explorer.ui.explore``.

``build_explore_tab`` lays the widgets out (inside ``gr.Blocks``) and wires them; the handlers
are methods of :class:`ExploreHandlers`, each a thin call into the tab's logic module.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from explorer.core.errors import ExplorerError, InputError
from explorer.core.prompts import PRESETS
from explorer.methods.colouring import COLOUR_MODES, colour_choices
from explorer.methods.session_io import copy_as_python, export_session
from explorer.ui import explore, grid_view, validate
from explorer.ui.causal_fields import build_causal_fields, wire_causal_fields
from explorer.ui.errors import friendly
from explorer.ui.grid_plot import GridPlot, figure_value
from explorer.ui.session import MODEL_PRESETS, AppConfig, ModelRegistry, Session
from explorer.viz.figure import MAX_COLUMNS


@dataclass
class ExploreWidgets:
    """The Explore tab's components (other tabs and the API endpoints read some of them)."""

    model: gr.Dropdown
    load_btn: gr.Button
    prompt: gr.Textbox
    chat: gr.Checkbox
    hide_system: gr.Checkbox
    run_btn: gr.Button
    status: gr.Markdown
    preset: gr.Dropdown
    n_placeholders: gr.Slider
    k: gr.Slider
    max_new: gr.Slider
    batch: gr.Slider
    strength: gr.Slider
    custom_user: gr.Textbox
    custom_lead: gr.Textbox
    grid_plot: gr.HTML
    row_btn: gr.Button
    col_btn: gr.Button
    all_btn: gr.Button
    stop_btn: gr.Button
    job_progress: gr.HTML
    colour: gr.Dropdown
    page: gr.Slider
    details: gr.HTML
    table: gr.Dataframe
    export_btn: gr.Button
    csv_file: gr.DownloadButton
    json_file: gr.DownloadButton
    html_file: gr.DownloadButton
    share_btn: gr.Button
    share_file: gr.DownloadButton
    import_file: gr.UploadButton
    py_btn: gr.Button
    py_code: gr.Code
    import_evt: object = None  # the import's event, for follow-ups (the edit banner, the prompt box)
    causal: object = None  # the causal colour mode's answer and subject fields (ui.causal_fields)

    @property
    def settings_inputs(self) -> list:
        return [self.preset, self.custom_user, self.custom_lead, self.n_placeholders, self.k, self.max_new,
                self.strength]

    @property
    def interp_outputs(self) -> list:
        return [self.grid_plot, self.details, self.table, self.status]


def _layout_inputs(config: AppConfig) -> dict:
    """Model picker, prompt, and the interpretation settings."""
    w: dict = {}
    with gr.Row():
        w["model"] = gr.Dropdown(MODEL_PRESETS if config.allow_any_model else [config.default_model],
                                 value=config.default_model, label="Model", allow_custom_value=config.allow_any_model,
                                 info="preset, hub id, local folder or .gguf file", scale=3,
                                 elem_id="sx-model")
        w["load_btn"] = gr.Button("Load model", scale=1, elem_id="sx-load")
    with gr.Row():
        # One line that grows: Enter runs, Shift+Enter starts a new line.
        w["prompt"] = gr.Textbox(label="Prompt", lines=1, max_lines=8, scale=5, elem_id="sx-prompt",
                                 placeholder="The Eiffel Tower is in the city of",
                                 info="Enter runs · Shift+Enter adds a new line")
        with gr.Column(scale=1, min_width=160):
            w["chat"] = gr.Checkbox(label="wrap in chat template", value=False)
            w["hide_system"] = gr.Checkbox(label="hide the chat template's system text", value=True,
                                           elem_id="sx-hide-system",
                                           info="start the grid at your first token")
            w["run_btn"] = gr.Button("Run", variant="primary", elem_id="sx-run")
    gr.Examples(explore.EXAMPLES, inputs=[w["prompt"]], label="Examples")
    w["status"] = gr.Markdown("", elem_id="sx-status")
    with gr.Accordion("Interpretation settings", open=False):
        with gr.Row():
            w["preset"] = gr.Dropdown([*PRESETS, "custom"], value="refers_to", label="Template", elem_id="sx-preset",
                                      info="a preset fills the fields below; editing them makes it 'custom'")
            w["n_placeholders"] = gr.Slider(1, 16, value=5, step=1, label="Placeholder count K",
                                            info="how many copies of the state are written into the question")
            w["k"] = gr.Slider(0, 29, value=1, step=1, label="Injection layer k",
                               info="the layer whose input receives the state (0 = the embeddings)")
            w["max_new"] = gr.Slider(4, 64, value=20, step=1, label="Max new tokens", elem_id="sx-max-new",
                                     info="the longest reading, in tokens")
            w["batch"] = gr.Slider(1, 64, value=config.max_batch if 1 <= config.max_batch <= 64 else 64, step=1,
                                   label="Batch size",
                                   info="cells read together by row, column and whole-grid jobs")
            w["strength"] = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Injection strength",
                                      info="1 replaces the placeholders by the state; less blends the two")
        with gr.Row():
            w["custom_user"] = gr.Textbox(label="Template text (user turn, {X} = the state)", elem_id="sx-custom-user",
                                          value=PRESETS["refers_to"].user)
            w["custom_lead"] = gr.Textbox(label="Lead-in (assistant turn)", value=PRESETS["refers_to"].lead_in,
                                          elem_id="sx-custom-lead")
    return w


def _layout_grid() -> dict:
    """The grid, its buttons, the details panel, the results table, downloads and sharing."""
    w: dict = {}
    with gr.Row():
        with gr.Column(scale=3):
            w["grid_plot"] = GridPlot(elem_id="sx-grid")
            with gr.Row():
                w["row_btn"] = gr.Button("Interpret row", elem_id="sx-row")
                w["col_btn"] = gr.Button("Interpret column", elem_id="sx-col")
                w["all_btn"] = gr.Button("Interpret whole grid", elem_id="sx-all")
                w["stop_btn"] = gr.Button("Stop", variant="stop", elem_id="sx-stop")
            w["job_progress"] = gr.HTML("", elem_id="sx-job-progress")
            with gr.Row():
                w["colour"] = gr.Dropdown(colour_choices(), value="logit_lens", label="Colour the grid by",
                                          elem_id="sx-colour")
                w["page"] = gr.Slider(0, 1, value=0, step=1, label="First token shown", visible=False)
            w["causal"] = build_causal_fields()
        with gr.Column(scale=2, min_width=280):
            w["details"] = gr.HTML(explore.details_html(None, None, None, None, None), elem_id="sx-details")
    w["table"] = gr.Dataframe(headers=explore.TABLE_COLUMNS, label="Results", interactive=False, wrap=True,
                              elem_id="sx-table")
    with gr.Row():
        w["export_btn"] = gr.Button("Prepare downloads", elem_id="sx-export")
        w["csv_file"] = gr.DownloadButton("CSV", visible=False, elem_id="sx-dl-csv")
        w["json_file"] = gr.DownloadButton("JSON", visible=False, elem_id="sx-dl-json")
        w["html_file"] = gr.DownloadButton("Figure (HTML)", visible=False, elem_id="sx-dl-html")
    with gr.Accordion("Share this session", open=False):
        with gr.Row():
            w["share_btn"] = gr.Button("Export session (JSON)")
            w["share_file"] = gr.DownloadButton("Download session", visible=False)
            w["import_file"] = gr.UploadButton("Import session", file_types=[".json"])
            w["py_btn"] = gr.Button("Copy as Python")
        w["py_code"] = gr.Code(language="python", label="Reproduce this view with the Python API", visible=False)
    return w


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
            gr.Warning(str(e))
            return (f"{html.escape(str(e))} Still using **{html.escape(sess.model)}**.", gr.skip(),
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
            out = (gr.skip() if view.figure is None else figure_value(view.figure), view.details,
                   gr.skip() if view.table is None else view.table, gr.skip() if quiet else view.status)
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
        def handler(sess: Session, batch_size, *values, progress=gr.Progress()):
            cells = explore.scope_cells(sess.require_grid(), scope, sess.selected, self.config.max_cells_per_job)
            sess.reading_list = (scope, cells)
            yield from self.stream(sess, cells, sess.selected, batch_size, list(values), progress, scope=scope)
        return friendly(handler)

    def on_settle(self, sess: Session):
        view = explore.settled_view(self.registry, sess)
        if view is None:
            return gr.skip(), gr.skip(), gr.skip()
        return figure_value(view.figure), view.details, view.table

    def on_stop(self, sess: Session):
        if sess.stop_jobs() == 0:
            return "Nothing is running."
        return "Stopping after the current batch…"

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
        """Recolour the grid; token identity streams its progress under the buttons and stops with Stop.
        After a Run only a colouring still to compute is run (the grid is already drawn)."""
        if not isinstance(mode, str) or mode not in COLOUR_MODES:
            raise gr.Error("Unknown colour mode.")
        sess.colour_mode = mode
        if sess.grid is None or (after_run and not grid_view.colour_pending(self.registry, sess)):
            yield gr.skip(), gr.skip()
            return
        for fig, bar in grid_view.colour_job(self.registry, sess):
            yield (gr.skip() if fig is None else figure_value(fig)), bar

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
        path.write_text(export_session(explore.snapshot(sess)), encoding="utf-8")
        return gr.update(value=str(path), visible=True)

    def on_import(self, sess: Session, file, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        text = validate.read_upload_text(file, (".json",))  # size checked on disk first, then deleted
        view = explore.restore(self.registry, sess, text)
        return figure_value(view.figure), view.details, view.table, view.status

    def on_python(self, sess: Session):
        return gr.update(value=copy_as_python(explore.snapshot(sess)), visible=True)

    def on_export(self, sess: Session):
        paths = explore.export_files(self.registry.get(sess.model), sess)
        return tuple(gr.update(value=p, visible=True) for p in paths)


def _wire(w: ExploreWidgets, h: ExploreHandlers, session: gr.State) -> None:
    """Connect the widgets' events to the handlers (queues and concurrency limits set here)."""
    w.load_btn.click(friendly(h.on_load), [w.model, session], [w.status, w.k, w.model], concurrency_limit=1,
                     concurrency_id="load")
    run_evt = dict(fn=friendly(h.on_run), inputs=[w.model, w.prompt, w.chat, w.hide_system, session],
                   outputs=[w.grid_plot, w.details, w.table, w.status, w.page, w.job_progress], concurrency_limit=4,
                   concurrency_id="run")
    recolour = dict(fn=friendly(h.on_colour), inputs=[w.colour, session], outputs=[w.grid_plot, w.job_progress],
                    concurrency_id="run")
    after_run = dict(recolour, fn=friendly(h.on_colour_after_run), show_progress="hidden")
    w.run_btn.click(**run_evt, api_name="run").success(**after_run)
    w.prompt.submit(**run_evt, api_visibility="private").success(**after_run)
    w.hide_system.input(friendly(h.on_hide), [w.hide_system, session], [w.grid_plot, w.page])
    w.preset.input(h.on_preset, [w.preset], [w.custom_user, w.custom_lead], queue=False)
    for field in (w.custom_user, w.custom_lead):
        field.input(lambda: "custom", None, [w.preset], queue=False)
    settle = dict(fn=friendly(h.on_settle), inputs=[session], outputs=[w.grid_plot, w.details, w.table], queue=False)
    w.grid_plot.select(friendly(h.on_click), [session, w.batch, *w.settings_inputs], w.interp_outputs,
                       concurrency_limit=8, concurrency_id="click", trigger_mode="multiple").then(**settle)
    for btn, scope in ((w.row_btn, "row"), (w.col_btn, "column"), (w.all_btn, "grid")):
        btn.click(h.on_scope(scope), [session, w.batch, *w.settings_inputs], [*w.interp_outputs, w.job_progress],
                  concurrency_limit=4, concurrency_id="scope").then(**settle)
    w.stop_btn.click(h.on_stop, [session], [w.status], queue=False)
    w.page.release(friendly(h.on_page), [w.page, session], [w.grid_plot])
    w.export_btn.click(friendly(h.on_export), [session], [w.csv_file, w.json_file, w.html_file])
    w.colour.change(**recolour)
    w.share_btn.click(friendly(h.on_share), [session], [w.share_file])
    w.import_evt = w.import_file.upload(friendly(h.on_import), [session, w.import_file], w.interp_outputs)
    w.py_btn.click(friendly(h.on_python), [session], [w.py_code])


def build_explore_tab(registry: ModelRegistry, session: gr.State, config: AppConfig) -> ExploreWidgets:
    """Lay out and wire the Explore tab (inside ``gr.Blocks``)."""
    widgets = ExploreWidgets(**_layout_inputs(config), **_layout_grid())
    _wire(widgets, ExploreHandlers(registry, config), session)
    wire_causal_fields(widgets.causal, widgets.colour, widgets.grid_plot, widgets.job_progress, session, registry)
    return widgets
