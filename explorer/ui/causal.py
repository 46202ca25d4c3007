"""The Explore grid's "causal effect on the answer" colour mode: the session's trace, computed as a
stoppable job, and the effect of the selected cell for the details panel (free of Gradio widgets)."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator

from explorer.api import Explorer
from explorer.core.hooks import MODEL_VARIANT
from explorer.methods.tracing import CAUSAL_MODE, CausalTrace, trace_ids
from explorer.ui import validate
from explorer.ui.background import stream_callbacks
from explorer.ui.readings import JobClock, progress_html
from explorer.ui.session import Session

HINT = ("Type the answer the model should give (e.g. <code>Paris</code>) and press <b>Trace</b>: the subject's "
        "embeddings are noised and each cell's clean state is restored in turn.")


def set_query(session: Session, answer, subject) -> None:
    """Remember the answer and subject the user typed (checked as text; the trace checks the rest)."""
    answer = validate.as_text("answer", answer, 200)
    subject = validate.as_text("subject", subject, 200).strip() or None
    if not answer.strip():
        from explorer.core.errors import InputError

        raise InputError("Type the answer first: the word the model should say next, e.g. Paris.")
    session.trace_query = (answer, subject)


def _variant_context(ex: Explorer, session: Session):
    # Outside a job (no variant set yet) read the session's own model variant, as its jobs do.
    return session.job_context(ex.lm) if MODEL_VARIANT.get() is None else contextlib.nullcontext()


def current_trace(ex: Explorer, session: Session) -> CausalTrace | None:
    """The session's trace if it belongs to its grid, its query and its model variant, else None."""
    trace, query, grid = session.trace, session.trace_query, session.grid
    if not isinstance(trace, CausalTrace) or query is None or grid is None:
        return None
    with _variant_context(ex, session):
        return trace if trace.matches(grid.token_ids, query[0], query[1], MODEL_VARIANT.get()) else None


def pending(ex: Explorer, session: Session) -> bool:
    """Whether the causal mode is on with an answer typed and its trace still to compute."""
    return (session.colour_mode == CAUSAL_MODE and session.grid is not None and session.trace_query is not None
            and current_trace(ex, session) is None)


def trace_job(ex: Explorer, session: Session) -> Iterator[str]:
    """Trace the session's grid (rows stream a progress bar; Stop ends it); yields progress HTML and keeps
    the finished trace on the session."""
    grid = session.require_grid()
    assert session.trace_query is not None
    answer, subject = session.trace_query
    clock = JobClock(grid.n_rows)
    result = None
    with session.job() as stop:
        def run(on_step):
            return trace_ids(ex.lm, list(grid.token_ids), answer, subject, prompt=grid.prompt, progress=on_step,
                             should_stop=stop.is_set)

        yield progress_html(clock, what="rows traced")
        for kind, value in stream_callbacks(run, context=lambda: session.job_context(ex.lm)):
            if kind == "step":
                clock.done, clock.total = int(value[0]), int(value[1])
                yield progress_html(clock, what="rows traced")
            else:
                result = value
    if result is not None and session.grid is grid:
        session.trace = result
    yield progress_html(clock, "stopped" if result is None else "done", what="rows traced")


def status_html(ex: Explorer, session: Session) -> str:
    """Under the grid in the causal mode: what to type, or what the colours measure."""
    trace = current_trace(ex, session)
    if trace is None:
        return f"<div class='sx-causal-note'>{HINT}</div>"
    return (f"<div class='sx-causal-note' data-p-clean='{trace.p_clean:.6f}'>Causal trace of "
            f"<code>{html.escape(repr(trace.answer_token))}</code>, subject <code>{html.escape(trace.subject)}</code>: "
            f"p_clean {trace.p_clean:.3f}, p_corrupted {trace.p_corrupted:.3f} ({trace.settings.samples} noise samples "
            f"of {trace.settings.noise:g}× the embeddings' std). Red cells bring the answer back when restored.</div>")


def effect_html(ex: Explorer, session: Session, layer: int | None, token: int | None) -> str:
    """The selected cell's causal effect, shown beside its reading (empty outside the causal mode)."""
    if session.colour_mode != CAUSAL_MODE or layer is None or token is None:
        return ""
    trace = current_trace(ex, session)
    if trace is None or not (0 <= layer < trace.n_rows and 0 <= token < trace.n_tokens):
        return ""
    effect = float(trace.effect[layer, token])
    where = " (a subject token, corrupted)" if token in trace.subject_positions else ""
    return (f"<div class='sx-causal' data-effect='{effect:.6f}'>causal effect{where}: restoring this state gives "
            f"p({html.escape(repr(trace.answer_token))}) = {effect + trace.p_corrupted:.3f}, "
            f"<b>{effect:+.3f}</b> over the corrupted run (clean {trace.p_clean:.3f}, corrupted "
            f"{trace.p_corrupted:.3f})</div>")
