"""The Explore tab: widgets, and the handlers that connect them to ``explorer.ui.explore``.

``build_explore_tab`` lays the widgets out (inside ``gr.Blocks``) and wires them; the handlers
are methods of :class:`ExploreHandlers`, each a thin call into the tab's logic module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from explorer.core.errors import ExplorerError
from explorer.core.prompts import PRESETS
from explorer.methods.colouring import COLOUR_MODES, colour_choices
from explorer.methods.session_io import copy_as_python, export_session
from explorer.ui import explore
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
        w["prompt"] = gr.Textbox(label="Prompt", lines=2, max_lines=8, scale=5, elem_id="sx-prompt",
                                 placeholder="The Eiffel Tower is in the city of")
        with gr.Column(scale=1, min_width=160):
            w["chat"] = gr.Checkbox(label="wrap in chat template", value=False)
            w["run_btn"] = gr.Button("Run", variant="primary", elem_id="sx-run")
    gr.Examples(explore.EXAMPLES, inputs=[w["prompt"]], label="Examples")
    w["status"] = gr.Markdown("", elem_id="sx-status")
    with gr.Accordion("Interpretation settings", open=False):
        with gr.Row():
            w["preset"] = gr.Dropdown([*PRESETS, "custom"], value="refers_to", label="Template")
            w["n_placeholders"] = gr.Slider(1, 16, value=5, step=1, label="Placeholders K",
                                          info="K: how many copies of the state are written into the question")
            w["k"] = gr.Slider(0, 29, value=1, step=1, label="Injection layer k",
                                 info="k: the layer where the model reads them back (not the grid's row)")
            w["max_new"] = gr.Slider(4, 64, value=20, step=1, label="Max new tokens")
            w["batch"] = gr.Slider(1, 64, value=16, step=1, label="Batch size")
            w["strength"] = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Strength",
                                    info="how much of the state replaces the placeholder (1 = all of it)")
        with gr.Row():
            w["custom_user"] = gr.Textbox(label="Custom template (user turn, {X} = the state)",
                                          value="What does this refer to: {X} ? Answer in a few words.")
            w["custom_lead"] = gr.Textbox(label="Custom lead-in (assistant turn)", value="It refers to")
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
            with gr.Row():
                w["colour"] = gr.Dropdown(colour_choices(), value="logit_lens", label="Colour the grid by",
                                          elem_id="sx-colour")
                w["page"] = gr.Slider(0, 1, value=0, step=1, label="First token shown", visible=False)
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
        progress(0.1, desc=f"loading {model_spec}")
        try:
            ex = self.registry.get(model_spec)
        except ExplorerError as e:  # keep the picker on the model that works, so Run keeps working
            gr.Warning(str(e))
            return (f"{e} Still using **{sess.model}**.", gr.skip(), gr.update(value=sess.model))
        sess.model = model_spec
        n = ex.lm.n_layers
        return (f"Loaded **{ex.lm.model_id}**: {n} blocks, hidden size {ex.lm.hidden_size}, "
                f"{ex.lm.dtype}, {ex.lm.device}.", gr.update(maximum=n - 1, value=min(1, n - 1)), gr.skip())

    def on_run(self, model_spec: str, text: str, wrap: bool, sess: Session, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        view = explore.run_prompt(self.registry, sess, model_spec, text, wrap)
        grid = sess.grid
        paged = grid is not None and grid.n_tokens > MAX_COLUMNS
        page_update = gr.update(visible=paged, maximum=max(0, (grid.n_tokens if grid else 1) - 1), value=0)
        return figure_value(view.figure), view.details, view.table, view.status, page_update

    def stream(self, sess: Session, cells, focus, batch_size, values, progress=None):
        _ex, settings = self.settings_of(sess, values)
        bs = explore._as_int("batch size", batch_size)
        sess.settings = settings_record(settings, values, bs)
        cb = None
        if progress is not None:
            def cb(done, total, desc):
                progress((done, total), desc=desc)
        for view in explore.interpret_cells(self.registry, sess, cells, settings, batch_size=bs, focus=focus,
                                            progress=cb, time_limit_s=self.config.job_time_limit_s):
            yield (gr.skip() if view.figure is None else figure_value(view.figure), view.details,
                   gr.skip() if view.table is None else view.table, view.status)

    def on_click(self, sess: Session, batch_size, preset_v, user_v, lead_v, n_ph, k_v, max_new_v, strength_v,
                 evt: gr.SelectData):
        values = [preset_v, user_v, lead_v, n_ph, k_v, max_new_v, strength_v]
        layer, token = int(evt.index[0]), int(evt.index[1])
        sess.require_grid().check_cell(layer, token)
        sess.selected = (layer, token)
        yield from self.stream(sess, [(layer, token)], (layer, token), batch_size, values)

    def on_scope(self, scope: str):
        def handler(sess: Session, batch_size, *values, progress=gr.Progress()):
            cells = explore.scope_cells(sess.require_grid(), scope, sess.selected, self.config.max_cells_per_job)
            yield from self.stream(sess, cells, sess.selected, batch_size, list(values), progress)
        return friendly(handler)

    def on_settle(self, sess: Session):
        view = explore.settled_view(self.registry, sess)
        if view is None:
            return gr.skip(), gr.skip(), gr.skip()
        return figure_value(view.figure), view.details, view.table

    def on_stop(self, sess: Session):
        sess.stop_event.set()
        return "Stopping after the current batch…"

    def on_page(self, start, sess: Session):
        if sess.grid is None:
            return gr.skip()
        sess.column_start = int(start)
        return figure_value(explore.figure_for(self.registry.get(sess.model), sess))

    def on_colour(self, mode: str, sess: Session):
        if mode not in COLOUR_MODES:
            raise gr.Error("Unknown colour mode.")
        sess.colour_mode = mode
        if sess.grid is None:
            return gr.skip()
        return figure_value(explore.figure_for(self.registry.get(sess.model), sess))

    def on_share(self, sess: Session):
        path = sess.workdir() / "selfie_session.json"
        path.write_text(export_session(explore.snapshot(sess)), encoding="utf-8")
        return gr.update(value=str(path), visible=True)

    def on_import(self, sess: Session, file, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        path = file if isinstance(file, str) else getattr(file, "name", str(file))
        view = explore.restore(self.registry, sess, Path(path).read_text(encoding="utf-8"))
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
    run_evt = dict(fn=friendly(h.on_run), inputs=[w.model, w.prompt, w.chat, session],
                   outputs=[w.grid_plot, w.details, w.table, w.status, w.page], concurrency_limit=4,
                   concurrency_id="run")
    w.run_btn.click(**run_evt, api_name="run")
    w.prompt.submit(**run_evt, api_visibility="private")
    settle = dict(fn=friendly(h.on_settle), inputs=[session], outputs=[w.grid_plot, w.details, w.table], queue=False)
    w.grid_plot.select(friendly(h.on_click), [session, w.batch, *w.settings_inputs], w.interp_outputs,
                       concurrency_limit=8, concurrency_id="click", trigger_mode="multiple").then(**settle)
    for btn, scope in ((w.row_btn, "row"), (w.col_btn, "column"), (w.all_btn, "grid")):
        btn.click(h.on_scope(scope), [session, w.batch, *w.settings_inputs], w.interp_outputs,
                  concurrency_limit=4, concurrency_id="scope").then(**settle)
    w.stop_btn.click(h.on_stop, [session], [w.status], queue=False)
    w.page.release(friendly(h.on_page), [w.page, session], [w.grid_plot])
    w.export_btn.click(friendly(h.on_export), [session], [w.csv_file, w.json_file, w.html_file])
    w.colour.change(friendly(h.on_colour), [w.colour, session], [w.grid_plot], concurrency_id="run")
    w.share_btn.click(friendly(h.on_share), [session], [w.share_file])
    w.import_evt = w.import_file.upload(friendly(h.on_import), [session, w.import_file], w.interp_outputs)
    w.py_btn.click(friendly(h.on_python), [session], [w.py_code])


def build_explore_tab(registry: ModelRegistry, session: gr.State, config: AppConfig) -> ExploreWidgets:
    """Lay out and wire the Explore tab (inside ``gr.Blocks``)."""
    widgets = ExploreWidgets(**_layout_inputs(config), **_layout_grid())
    _wire(widgets, ExploreHandlers(registry, config), session)
    return widgets
