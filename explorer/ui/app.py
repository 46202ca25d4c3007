"""The Gradio app: a thin view over ``explorer.ui.explore`` (and the other tabs' logic modules)."""

from __future__ import annotations

import os
from collections.abc import Callable

import gradio as gr

from explorer.errors import ExplorerError
from explorer.figure import MAX_COLUMNS
from explorer.lenses import COLOUR_MODES
from explorer.prompts import PRESETS
from explorer.ui import explore
from explorer.ui.control_tab import build_control_tab
from explorer.ui.grid_plot import GridPlot, figure_value
from explorer.ui.guard import app_kwargs
from explorer.ui.session import MODEL_PRESETS, AppConfig, ModelRegistry, Session
from explorer.ui.study_tabs import build_compare_tab, build_cross_tab, build_evaluate_tab

CSS = """
.sx-details { font-size: 0.95rem; line-height: 1.5; padding: 0.4em 0.2em; }
.sx-details .sx-cell { margin-bottom: 0.4em; }
.sx-interp { padding: 0.5em; border-radius: 6px; background: #fafafa; border: 1px solid #e5e7eb; min-height: 2em; }
.sx-interp span { border-radius: 3px; }
.sx-pending { color: #6b7280; font-style: italic; }
.sx-score, .sx-lens { color: #4b5563; font-size: 0.85rem; margin-top: 0.4em; }
.sx-chip { display: inline-block; background: #eef2ff; border-radius: 4px; padding: 0 4px; margin: 1px; }
.sx-empty { color: #6b7280; }
"""

INTRO = """# SelfIE Explorer
Type a prompt and press **Run**: the grid shows every hidden state of the model, one row per layer
(0 = embeddings) and one column per token. **Click a cell** and the model describes that state in
words ([SelfIE](https://arxiv.org/abs/2403.10949)); colour turns to *relevancy*, how much the words
came from the state rather than from the question. Hover a cell for its logit lens or its reading."""


def gpu(fn: Callable) -> Callable:
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces; a no-op everywhere else."""
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces

            return spaces.GPU(duration=120)(fn)
        except ImportError:
            return fn
    return fn


def user_error(e: Exception) -> gr.Error:
    """A clear message for the user; internal details only in the server log."""
    if isinstance(e, ExplorerError):
        return gr.Error(str(e))
    return gr.Error(f"Something went wrong ({type(e).__name__}); the server is fine, please try again.")


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    config = config or AppConfig()
    registry = ModelRegistry(config)

    def new_session() -> Session:
        return Session(model=config.default_model)

    with gr.Blocks(title="SelfIE Explorer") as demo:
        def close_session(s: Session) -> None:
            registry.forget_session(s)
            s.close()

        session = gr.State(new_session, time_to_live=3 * 3600, delete_callback=close_session)
        gr.Markdown(INTRO)
        with gr.Tab("Explore", id="explore"):
            with gr.Row():
                model = gr.Dropdown(MODEL_PRESETS if config.allow_any_model else [config.default_model],
                                    value=config.default_model, label="Model", allow_custom_value=config.allow_any_model,
                                    info="preset, hub id, local folder or .gguf file", scale=3)
                load_btn = gr.Button("Load model", scale=1)
            with gr.Row():
                prompt = gr.Textbox(label="Prompt", lines=2, max_lines=8, scale=5, elem_id="sx-prompt",
                                    placeholder="The Eiffel Tower is in the city of")
                with gr.Column(scale=1, min_width=160):
                    chat = gr.Checkbox(label="wrap in chat template", value=False)
                    run_btn = gr.Button("Run", variant="primary", elem_id="sx-run")
            gr.Examples(explore.EXAMPLES, inputs=[prompt], label="Examples")
            status = gr.Markdown("", elem_id="sx-status")
            with gr.Accordion("Interpretation settings", open=False):
                with gr.Row():
                    preset = gr.Dropdown([*PRESETS, "custom"], value="refers_to", label="Template")
                    n_placeholders = gr.Slider(1, 16, value=5, step=1, label="Placeholders K")
                    k = gr.Slider(0, 29, value=1, step=1, label="Injection layer k")
                    max_new = gr.Slider(4, 64, value=20, step=1, label="Max new tokens")
                    batch = gr.Slider(1, 64, value=16, step=1, label="Batch size")
                    strength = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Strength")
                with gr.Row():
                    custom_user = gr.Textbox(label="Custom template (user turn, {X} = the state)",
                                             value="What does this refer to: {X} ? Answer in a few words.")
                    custom_lead = gr.Textbox(label="Custom lead-in (assistant turn)", value="It refers to")
            with gr.Row():
                with gr.Column(scale=3):
                    grid_plot = GridPlot(elem_id="sx-grid")
                    with gr.Row():
                        row_btn = gr.Button("Interpret row", elem_id="sx-row")
                        col_btn = gr.Button("Interpret column", elem_id="sx-col")
                        all_btn = gr.Button("Interpret whole grid", elem_id="sx-all")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="sx-stop")
                    with gr.Row():
                        colour = gr.Dropdown([(label, key) for key, label in COLOUR_MODES.items()],
                                             value="logit_lens", label="Colour the grid by", elem_id="sx-colour")
                        page = gr.Slider(0, 1, value=0, step=1, label="First token shown", visible=False)
                with gr.Column(scale=2, min_width=280):
                    details = gr.HTML(explore.details_html(None, None, None, None, None), elem_id="sx-details")
            table = gr.Dataframe(headers=explore.TABLE_COLUMNS, label="Results", interactive=False, wrap=True,
                                 elem_id="sx-table")
            with gr.Row():
                export_btn = gr.Button("Prepare downloads", elem_id="sx-export")
                csv_file = gr.DownloadButton("CSV", visible=False, elem_id="sx-dl-csv")
                json_file = gr.DownloadButton("JSON", visible=False, elem_id="sx-dl-json")
                html_file = gr.DownloadButton("Figure (HTML)", visible=False, elem_id="sx-dl-html")
            with gr.Accordion("Share this session", open=False):
                with gr.Row():
                    share_btn = gr.Button("Export session (JSON)")
                    share_file = gr.DownloadButton("Download session", visible=False)
                    import_file = gr.UploadButton("Import session", file_types=[".json"])
                    py_btn = gr.Button("Copy as Python")
                py_code = gr.Code(language="python", label="Reproduce this view with the Python API", visible=False)

        with gr.Tab("Control", id="control"):
            build_control_tab(registry, session, user_error)
        with gr.Tab("Compare", id="compare"):
            build_compare_tab(registry, session, user_error)
        with gr.Tab("Cross-model", id="cross"):
            build_cross_tab(registry, session, user_error)
        with gr.Tab("Evaluate", id="evaluate"):
            build_evaluate_tab(registry, session, user_error)

        settings_inputs = [preset, custom_user, custom_lead, n_placeholders, k, max_new, strength]

        # ------------------------------------------------------------------ handlers
        def on_load(model_spec: str, sess: Session, progress=gr.Progress()):
            progress(0.1, desc=f"loading {model_spec}")
            try:
                ex = registry.get(model_spec)
            except Exception as e:
                raise user_error(e) from None
            sess.model = model_spec
            n = ex.lm.n_layers
            return (f"Loaded **{ex.lm.model_id}**: {n} blocks, hidden size {ex.lm.hidden_size}, "
                    f"{ex.lm.dtype}, {ex.lm.device}.", gr.update(maximum=n - 1, value=min(1, n - 1)))

        def on_run(model_spec: str, text: str, wrap: bool, sess: Session, request: gr.Request):
            registry.bind(getattr(request, "session_hash", None), sess)
            try:
                view = explore.run_prompt(registry, sess, model_spec, text, wrap)
            except Exception as e:
                raise user_error(e) from None
            grid = sess.grid
            paged = grid is not None and grid.n_tokens > MAX_COLUMNS
            page_update = gr.update(visible=paged, maximum=max(0, (grid.n_tokens if grid else 1) - 1), value=0)
            return figure_value(view.figure), view.details, view.table, view.status, page_update

        def settings_of(sess: Session, values: list):
            ex = registry.get(sess.model)
            return ex, explore.settings_from_ui(ex, *values)

        def stream(sess: Session, cells, focus, batch_size, values, progress=None):
            try:
                _ex, settings = settings_of(sess, values)
                bs = explore._as_int("batch size", batch_size)
                preset_v, user_v, lead_v = values[0], values[1], values[2]
                sess.settings = {"template": preset_v if preset_v != "custom" else f"{user_v}|{lead_v}",
                                 "n_placeholders": settings.n_placeholders, "k": settings.k,
                                 "max_new_tokens": settings.max_new_tokens, "strength": settings.strength,
                                 "batch_size": bs}
                cb = None
                if progress is not None:
                    def cb(done, total, desc):
                        progress((done, total), desc=desc)
                for view in explore.interpret_cells(registry, sess, cells, settings, batch_size=bs, focus=focus,
                                                    progress=cb, time_limit_s=config.job_time_limit_s):
                    yield (gr.skip() if view.figure is None else figure_value(view.figure), view.details,
                           gr.skip() if view.table is None else view.table, view.status)
            except Exception as e:
                raise user_error(e) from None

        def on_click(sess: Session, batch_size, preset_v, user_v, lead_v, n_ph, k_v, max_new_v, strength_v,
                     evt: gr.SelectData):
            values = [preset_v, user_v, lead_v, n_ph, k_v, max_new_v, strength_v]
            try:
                layer, token = int(evt.index[0]), int(evt.index[1])
                grid = sess.require_grid()
                grid.check_cell(layer, token)
            except Exception as e:
                raise user_error(e) from None
            sess.selected = (layer, token)
            yield from stream(sess, [(layer, token)], (layer, token), batch_size, list(values))

        def on_scope(scope: str):
            def handler(sess: Session, batch_size, *values, progress=gr.Progress()):
                try:
                    cells = explore.scope_cells(sess.require_grid(), scope, sess.selected, config.max_cells_per_job)
                except Exception as e:
                    raise user_error(e) from None
                yield from stream(sess, cells, sess.selected, batch_size, list(values), progress)
            return handler

        def on_settle(sess: Session):
            view = explore.settled_view(registry, sess)
            if view is None:
                return gr.skip(), gr.skip(), gr.skip()
            return figure_value(view.figure), view.details, view.table

        def on_stop(sess: Session):
            sess.stop_event.set()
            return "Stopping after the current batch…"

        def on_page(start, sess: Session):
            if sess.grid is None:
                return gr.skip()
            sess.column_start = int(start)
            return figure_value(explore.figure_for(registry.get(sess.model), sess))

        def on_colour(mode: str, sess: Session):
            if mode not in COLOUR_MODES:
                raise gr.Error("Unknown colour mode.")
            sess.colour_mode = mode
            if sess.grid is None:
                return gr.skip()
            try:
                return figure_value(explore.figure_for(registry.get(sess.model), sess))
            except Exception as e:
                raise user_error(e) from None

        def on_share(sess: Session):
            try:
                from explorer.session_io import export_session

                path = sess.workdir() / "selfie_session.json"
                path.write_text(export_session(explore.snapshot(sess)), encoding="utf-8")
            except Exception as e:
                raise user_error(e) from None
            return gr.update(value=str(path), visible=True)

        def on_import(sess: Session, file, request: gr.Request):
            registry.bind(getattr(request, "session_hash", None), sess)
            try:
                path = file if isinstance(file, str) else getattr(file, "name", str(file))
                from pathlib import Path as _P

                text = _P(path).read_text(encoding="utf-8")
                view = explore.restore(registry, sess, text)
            except Exception as e:
                raise user_error(e) from None
            return figure_value(view.figure), view.details, view.table, view.status

        def on_python(sess: Session):
            try:
                from explorer.session_io import copy_as_python

                return gr.update(value=copy_as_python(explore.snapshot(sess)), visible=True)
            except Exception as e:
                raise user_error(e) from None

        def on_export(sess: Session):
            try:
                ex = registry.get(sess.model)
                paths = explore.export_files(ex, sess)
            except Exception as e:
                raise user_error(e) from None
            return tuple(gr.update(value=p, visible=True) for p in paths)

        # Gradio deletes a closed tab's gr.State only an hour later (in case the user comes back);
        # what the session holds (grid, readings, edit, cache share) is freed as soon as the tab closes.
        # Handlers that give a session something to hold bind it to its connection (not a load event:
        # that would race the first click for the creation of the state).
        def on_close(request: gr.Request) -> None:
            registry.release(request.session_hash)

        demo.unload(on_close)
        load_btn.click(on_load, [model, session], [status, k], concurrency_limit=1, concurrency_id="load")
        run_evt = dict(fn=gpu(on_run), inputs=[model, prompt, chat, session],
                       outputs=[grid_plot, details, table, status, page], concurrency_limit=4,
                       concurrency_id="run")
        run_btn.click(**run_evt, api_name="run")
        prompt.submit(**run_evt, api_visibility="private")
        interp_outputs = [grid_plot, details, table, status]
        settle = dict(fn=on_settle, inputs=[session], outputs=[grid_plot, details, table], queue=False)
        grid_plot.select(gpu(on_click), [session, batch, *settings_inputs], interp_outputs,
                         concurrency_limit=8, concurrency_id="click", trigger_mode="multiple").then(**settle)
        for btn, scope in ((row_btn, "row"), (col_btn, "column"), (all_btn, "grid")):
            btn.click(gpu(on_scope(scope)), [session, batch, *settings_inputs], interp_outputs,
                      concurrency_limit=4, concurrency_id="scope").then(**settle)
        stop_btn.click(on_stop, [session], [status], queue=False)
        page.release(on_page, [page, session], [grid_plot])
        export_btn.click(on_export, [session], [csv_file, json_file, html_file])
        colour.change(on_colour, [colour, session], [grid_plot], concurrency_id="run")
        share_btn.click(on_share, [session], [share_file])
        import_file.upload(on_import, [session, import_file], [grid_plot, details, table, status])
        py_btn.click(on_python, [session], [py_code])
        # ------------------------------------------------------------------ API for programs
        # Clicks carry browser event data that API clients cannot send; these endpoints take the
        # cells as text instead (load test, scripts). Each client has its own session state.
        with gr.Row(visible=False):
            api_cells = gr.Textbox()
            api_template = gr.Textbox()
            api_max_new = gr.Number()
            api_batch = gr.Number()
            api_json = gr.JSON()
            api_layer = gr.Number()
            api_token = gr.Number()
            api_concept = gr.Textbox()
            api_steps = gr.Number()

        def api_interpret(sess: Session, cells: str, template: str, max_new_tokens, batch_size):
            try:
                from explorer.grid import parse_cells

                grid = sess.require_grid()
                _ex, settings = settings_of(sess, [template or "refers_to", "", "", 5, 1,
                                                   20 if max_new_tokens is None else max_new_tokens, 1.0])
                cell_list = parse_cells(cells, grid)
                if len(cell_list) > config.max_cells_per_job:
                    raise explore.InputError(f"At most {config.max_cells_per_job} cells per job.")
                bs = explore._as_int("batch size", 16 if batch_size is None else batch_size)
                for _ in explore.interpret_cells(registry, sess, cell_list, settings, batch_size=bs,
                                                 time_limit_s=config.job_time_limit_s, min_interval_s=3600):
                    pass
                wanted = set(cell_list)
                return [r for r in sess.results.records() if (r["layer"], r["token"]) in wanted]
            except Exception as e:
                raise user_error(e) from None

        def api_supervised(sess: Session, layer, token, concept: str, steps):
            from explorer.ui.control_tab import run_supervised

            try:
                grid = sess.require_grid()
                views = list(run_supervised(registry, sess, grid.prompt, layer, token, "concept phrase", concept, "",
                                            0, layer, steps or 20, 2e-3, 10.0, "What is the Eiffel Tower?"))
                last = views[-1]
                return {"edit_id": sess.edit.edit_id, "before": last[1], "after": last[2]}
            except Exception as e:
                raise user_error(e) from None

        def api_revert(sess: Session):
            sess.edit = None
            return {"edit_id": None}

        api_btn = gr.Button(visible=False)
        api_btn.click(gpu(api_interpret), [session, api_cells, api_template, api_max_new, api_batch], [api_json],
                      api_name="interpret", concurrency_limit=8, concurrency_id="click")
        api_btn.click(gpu(api_supervised), [session, api_layer, api_token, api_concept, api_steps], [api_json],
                      api_name="supervised", concurrency_id="control", concurrency_limit=2)
        api_btn.click(api_revert, [session], [api_json], api_name="revert")
    demo.sx_registry = registry  # type: ignore[attr-defined]
    demo.sx_config = config  # type: ignore[attr-defined]
    return demo


def launch(model: str | None = None, host: str = "127.0.0.1", port: int = 7860, **kwargs) -> None:
    config = AppConfig()
    if model:
        config.default_model = model
    demo = build_app(config)
    # Load the default model before the first visitor arrives.
    demo.sx_registry.get(config.default_model)  # type: ignore[attr-defined]
    demo.queue(default_concurrency_limit=4, max_size=int(os.environ.get("SELFIE_QUEUE_SIZE", "64")))
    auth = None
    if os.environ.get("SELFIE_AUTH"):
        user, _, password = os.environ["SELFIE_AUTH"].partition(":")
        auth = (user, password)
    demo.launch(server_name=host, server_port=port, css=CSS, auth=auth, show_error=not config.public,
                app_kwargs=app_kwargs(), **kwargs)
