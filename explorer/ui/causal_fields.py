"""The fields of the "causal effect on the answer" colour mode, shown beside the colour menu when that
mode is picked: the answer, an optional subject, and Trace. Handlers are thin calls into ``causal``."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from explorer.methods.tracing import CAUSAL_MODE
from explorer.ui import causal, grid_view
from explorer.ui.errors import friendly
from explorer.ui.grid_plot import figure_value
from explorer.ui.session import ModelRegistry, Session


@dataclass
class CausalWidgets:
    box: gr.Row
    answer: gr.Textbox
    subject: gr.Textbox
    trace_btn: gr.Button


def build_causal_fields() -> CausalWidgets:
    """The answer and subject fields with a Trace button (hidden until the causal mode is picked)."""
    with gr.Row(visible=False, elem_id="sx-causal") as box:
        answer = gr.Textbox(label="Answer", placeholder="Paris", scale=2, elem_id="sx-causal-answer",
                            info="the word the model should say next (its first token is measured); Enter traces")
        subject = gr.Textbox(label="Subject (optional)", placeholder="Eiffel Tower", scale=2,
                             elem_id="sx-causal-subject",
                             info="the words whose embeddings are noised; empty: the first capitalised name")
        trace_btn = gr.Button("Trace", scale=1, elem_id="sx-causal-run")
    return CausalWidgets(box, answer, subject, trace_btn)


def wire_causal_fields(cw: CausalWidgets, colour: gr.Dropdown, grid_plot, job_progress, session: gr.State,
                       registry: ModelRegistry) -> None:
    """Show the fields with the causal mode; Trace (or Enter in the answer) traces the grid and recolours it."""
    colour.change(lambda mode: gr.update(visible=mode == CAUSAL_MODE), [colour], [cw.box], queue=False)

    def on_trace(answer, subject, sess: Session):
        causal.set_query(sess, answer, subject)
        sess.colour_mode = CAUSAL_MODE
        sess.require_grid()
        for fig, bar in grid_view.colour_job(registry, sess):
            yield (gr.skip() if fig is None else figure_value(fig)), bar

    event = dict(fn=friendly(on_trace), inputs=[cw.answer, cw.subject, session], outputs=[grid_plot, job_progress],
                 concurrency_id="run")
    cw.trace_btn.click(**event)
    cw.answer.submit(**event)
