"""Named endpoints for programs (scripts, the load test).

Clicks carry browser event data that API clients cannot send; these endpoints take the cells as
text instead. Each client has its own session state, exactly as a browser tab does. Every value
is validated here before use, and the long endpoints are generators: they yield nothing visible
while working, which lets Gradio notice a client that left, and the job then stops.
"""

from __future__ import annotations

import gradio as gr

from explorer.core.errors import InputError
from explorer.core.grid import parse_cells
from explorer.methods.session_io import export_session
from explorer.ui import explore, sharing, validate
from explorer.ui.control_tab import run_reinforcement, run_steer, run_supervised
from explorer.ui.errors import friendly
from explorer.ui.explore_tab import ExploreHandlers
from explorer.ui.session import AppConfig, ModelRegistry, Session

MAX_CELL_SPEC = 20_000  # characters of a cell list such as "15:7,20:7"


class ApiHandlers:
    """The endpoints' handlers: each a thin call into the tabs' logic, on the caller's own session."""

    def __init__(self, registry: ModelRegistry, config: AppConfig):
        self.registry = registry
        self.config = config
        self.explore = ExploreHandlers(registry, config)

    def interpret(self, sess: Session, cells: str, template, max_new_tokens, batch_size):
        grid = sess.require_grid()
        template = validate.as_text("template", template, 100) or "refers_to"
        max_new = 20 if max_new_tokens is None else max_new_tokens
        _ex, settings = self.explore.settings_of(sess, [template, "", "", 5, 1, max_new, 1.0])
        cell_list = parse_cells(validate.as_text("cell list", cells, MAX_CELL_SPEC), grid)
        if len(cell_list) > self.config.max_cells_per_job:
            raise InputError(f"At most {self.config.max_cells_per_job} cells per job.")
        bs = explore._as_int("batch size", 16 if batch_size is None else batch_size, 1, 64)
        for _ in explore.interpret_cells(self.registry, sess, cell_list, settings, batch_size=bs,
                                         time_limit_s=self.config.job_time_limit_s, min_interval_s=1.0):
            yield gr.skip()
        if sess.results is None:
            raise InputError("This session was closed or its grid was freed; run the prompt again.")
        wanted = set(cell_list)
        yield [r for r in sess.results.records() if (r["layer"], r["token"]) in wanted]

    def api_interpret(self, sess: Session, cells: str, template, max_new_tokens, batch_size):
        yield from self.interpret(sess, cells, template, max_new_tokens, batch_size)

    def api_row(self, sess: Session, layer, template, max_new_tokens, batch_size):
        yield from self.interpret(sess, f"row:{explore._as_int('layer', layer, 0)}", template, max_new_tokens, batch_size)

    def api_supervised(self, sess: Session, layer, token, concept, steps, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        grid = sess.require_grid()
        last = None
        for view in run_supervised(self.registry, sess, grid.prompt, layer, token, "concept phrase", concept, "",
                                   0, layer, 20 if steps is None else steps, 2e-3, 10.0, "What is the Eiffel Tower?"):
            if view is None:
                yield gr.skip()
            else:
                last = view
        yield {"edit_id": sess.edit.edit_id if sess.edit is not None else None, "before": last[1], "after": last[2]}

    def api_reinforcement(self, sess: Session, prompt, layer, concept, steps, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        for view in run_reinforcement(self.registry, sess, prompt, layer, concept, concept, "keywords",
                                      10 if steps is None else steps, 2e-3):
            if view is not None and view[1] is not None:
                yield {"edit_id": sess.edit.edit_id if sess.edit is not None else None,
                       "before": list(view[1]["before"]), "after": list(view[1]["after"])}
            else:
                yield gr.skip()

    def api_steer(self, sess: Session, prompt, a, b, layer, alpha):
        for out in run_steer(self.registry, sess, prompt, a, b, layer, alpha):
            yield gr.skip() if out is None else {"before": out["before"], "after": out["after"]}

    def api_export(self, sess: Session):
        return export_session(sharing.snapshot(sess))

    def api_import(self, sess: Session, text, request: gr.Request):
        self.registry.bind(getattr(request, "session_hash", None), sess)
        text = validate.as_text("session file", text, validate.max_upload_bytes(), required=True)
        sharing.restore(self.registry, sess, text)
        return {"prompt": sess.grid.prompt, "results": len(sess.results.cells),
                "edit_id": sess.edit.edit_id if sess.edit is not None else None}

    def api_revert(self, sess: Session):
        sess.edit = None
        return {"edit_id": None}


def build_api_endpoints(registry: ModelRegistry, session: gr.State, config: AppConfig) -> None:
    """Hidden components and the ``interpret``, ``row``, ``supervised``, ``reinforcement``, ``steer``,
    ``export_session``, ``import_session`` and ``revert`` endpoints."""
    h = ApiHandlers(registry, config)
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
        api_text = gr.Textbox()
        api_text_b = gr.Textbox()
        api_alpha = gr.Number()
    btn = gr.Button(visible=False)
    click = {"concurrency_limit": 8, "concurrency_id": "click"}
    control = {"concurrency_id": "control", "concurrency_limit": 2}
    btn.click(friendly(h.api_interpret), [session, api_cells, api_template, api_max_new, api_batch], [api_json],
              api_name="interpret", **click)
    btn.click(friendly(h.api_row), [session, api_layer, api_template, api_max_new, api_batch], [api_json],
              api_name="row", concurrency_limit=4, concurrency_id="scope")
    btn.click(friendly(h.api_supervised), [session, api_layer, api_token, api_concept, api_steps], [api_json],
              api_name="supervised", **control)
    btn.click(friendly(h.api_reinforcement), [session, api_text, api_layer, api_concept, api_steps], [api_json],
              api_name="reinforcement", **control)
    btn.click(friendly(h.api_steer), [session, api_text, api_concept, api_text_b, api_layer, api_alpha], [api_json],
              api_name="steer", **control)
    btn.click(friendly(h.api_export), [session], [api_text], api_name="export_session")
    btn.click(friendly(h.api_import), [session, api_text], [api_json], api_name="import_session",
              concurrency_limit=4, concurrency_id="run")
    btn.click(h.api_revert, [session], [api_json], api_name="revert")
