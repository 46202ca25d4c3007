"""Named endpoints for programs (scripts, the load test).

Clicks carry browser event data that API clients cannot send; these endpoints take the cells as
text instead. Each client has its own session state, exactly as a browser tab does.
"""

from __future__ import annotations

import gradio as gr

from explorer.core.errors import InputError
from explorer.core.grid import parse_cells
from explorer.ui import explore
from explorer.ui.control_tab import run_supervised
from explorer.ui.errors import friendly
from explorer.ui.explore_tab import ExploreHandlers
from explorer.ui.session import AppConfig, ModelRegistry, Session


def build_api_endpoints(registry: ModelRegistry, session: gr.State, config: AppConfig) -> None:
    """Hidden components and the ``interpret``, ``supervised`` and ``revert`` endpoints."""
    handlers = ExploreHandlers(registry, config)
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
        grid = sess.require_grid()
        _ex, settings = handlers.settings_of(sess, [template or "refers_to", "", "", 5, 1,
                                                    20 if max_new_tokens is None else max_new_tokens, 1.0])
        cell_list = parse_cells(cells, grid)
        if len(cell_list) > config.max_cells_per_job:
            raise InputError(f"At most {config.max_cells_per_job} cells per job.")
        bs = explore._as_int("batch size", 16 if batch_size is None else batch_size)
        for _ in explore.interpret_cells(registry, sess, cell_list, settings, batch_size=bs,
                                         time_limit_s=config.job_time_limit_s, min_interval_s=3600):
            pass
        wanted = set(cell_list)
        return [r for r in sess.results.records() if (r["layer"], r["token"]) in wanted]

    def api_supervised(sess: Session, layer, token, concept: str, steps):
        grid = sess.require_grid()
        views = list(run_supervised(registry, sess, grid.prompt, layer, token, "concept phrase", concept, "",
                                    0, layer, steps or 20, 2e-3, 10.0, "What is the Eiffel Tower?"))
        last = views[-1]
        return {"edit_id": sess.edit.edit_id, "before": last[1], "after": last[2]}

    def api_revert(sess: Session):
        sess.edit = None
        return {"edit_id": None}

    api_btn = gr.Button(visible=False)
    api_btn.click(friendly(api_interpret), [session, api_cells, api_template, api_max_new, api_batch], [api_json],
                  api_name="interpret", concurrency_limit=8, concurrency_id="click")
    api_btn.click(friendly(api_supervised), [session, api_layer, api_token, api_concept, api_steps], [api_json],
                  api_name="supervised", concurrency_id="control", concurrency_limit=2)
    api_btn.click(api_revert, [session], [api_json], api_name="revert")
