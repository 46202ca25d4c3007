"""The Explore grid's view: which columns are drawn, the colour layer under the readings, and the
token-identity colouring computed once per grid as a stoppable job with a progress bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from explorer.api import Explorer
from explorer.core.grid import Grid
from explorer.core.hooks import MODEL_VARIANT
from explorer.methods import geometry as _geometry  # noqa: F401  registers the geometry colour modes
from explorer.methods.colouring import COLOUR_MODES, ColourLayer, colour_choices, colour_layer
from explorer.methods.lenses import token_identity, token_identity_cached
from explorer.methods.tracing import CAUSAL_MODE, trace_layer
from explorer.ui import causal, edits
from explorer.ui.background import stream_callbacks
from explorer.ui.readings import JobClock, progress_html
from explorer.ui.session import ModelRegistry, Session
from explorer.viz.figure import MAX_COLUMNS, column_window, explore_figure


def first_column(ex: Explorer, session: Session) -> int:
    """The first column shown: the user's first token when the chat wrap's system text is hidden."""
    grid = session.grid
    if grid is None:
        return 0
    return max(int(session.column_start), column_floor(ex, session))


def column_floor(ex: Explorer, session: Session) -> int:
    """The first column the window may show (the user's first token when the system text is hidden)."""
    grid = session.grid
    return user_start(ex.lm, grid) if grid is not None and session.hide_system else 0


def user_start(lm, grid: Grid) -> int:
    """Where the user's own text begins in a chat-wrapped grid (0 for a plain prompt): the chat
    template rendered around a marker, its tokens before the marker compared with the grid's."""
    if not grid.chat or not getattr(lm.tokenizer, "chat_template", None):
        return 0
    marker = "\u2063SX\u2063"
    rendered = lm.tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                                add_generation_prompt=True)
    before = rendered.partition(marker)[0]
    ids = lm.tokenizer.encode(before, add_special_tokens=False)
    n = len(ids)
    return n if 0 < n < grid.n_tokens and list(grid.token_ids[:n]) == list(ids) else 0


def base_layer(ex: Explorer, session: Session, cols: list[int]) -> ColourLayer | None:
    """The grid's colour layer, kept per grid, mode and window: a job's redraws only change the overlay."""
    grid = session.require_grid()
    mode = session.colour_mode
    # Outside a job (no variant set yet) read the session's own model variant, as its jobs do.
    with session.job_context(ex.lm) if MODEL_VARIANT.get() is None else contextlib.nullcontext():
        if mode == "token_identity" and not token_identity_cached(ex.lm, grid):
            return None  # computed by its own stoppable job (colour_job); drawn plain meanwhile
        if mode == CAUSAL_MODE:  # the session's own trace (its answer and subject), once computed
            trace = causal.current_trace(ex, session)
            return None if trace is None else trace_layer(trace, cols)
        concept = None
        if mode.startswith("concept:"):  # a concept of this session (never a global mode)
            concept = session.concepts.get(concept_name(mode))
            if concept is None:  # no longer in the session: the grid falls back to the default colouring
                session.colour_mode = mode = DEFAULT_MODE
        key = ("colour_layer", grid.fingerprint(), mode, tuple(cols), MODEL_VARIANT.get(),
               concept.content_id() if concept is not None else None)
        return ex.lm.memo.get_or_compute(
            key, lambda: concept.colour(grid, cols) if concept is not None else colour_layer(mode, grid, ex.lm, cols))


DEFAULT_MODE = "logit_lens"


def concept_name(mode: str) -> str:
    return mode.partition(":")[2].strip()


def concept_mode(name: str) -> str:
    return f"concept: {name}"


def usable_colour_mode(session: Session, mode: str) -> str:
    """``mode`` if this session can colour by it (a registered mode, or a concept it holds), else the default."""
    if mode in COLOUR_MODES or (mode.startswith("concept:") and concept_name(mode) in session.concepts):
        return mode
    return DEFAULT_MODE


def colour_menu(session: Session) -> list[tuple[str, str]]:
    """The colour menu of this session: every registered mode, then each concept it has trained or loaded."""
    return [*colour_choices(), *((f"concept: {name} (probe)", concept_mode(name)) for name in session.concepts)]


def colour_help(session: Session) -> str:
    """One line under the grid saying what the colour means (and its units) for the session's mode."""
    mode = session.colour_mode
    if mode.startswith("concept:"):
        name = concept_name(mode)
        return (f"**Colour:** P({name}) from the concept's probe at each row, 0 to 1 (purple = the probe sees the "
                "concept). Rows without a probe stay blank. Read cells are drawn on top by relevancy.")
    text = COLOUR_MODES[mode].help if mode in COLOUR_MODES else ""
    return f"**Colour:** {text}" if text else ""


def colour_pending(registry: ModelRegistry, session: Session) -> bool:
    """Whether the grid's colouring still has to be computed (token identity of a new grid, a causal trace)."""
    if session.colour_mode == CAUSAL_MODE:
        return causal.pending(registry.get(session.model), session)
    if session.grid is None or session.colour_mode != "token_identity":
        return False
    with session.job_context(registry.get(session.model).lm):
        return not token_identity_cached(registry.get(session.model).lm, session.grid)


def colour_job(registry: ModelRegistry, session: Session) -> Iterator[tuple[dict | None, str]]:
    """Colour the grid by the current mode; token identity (one forward pass per cell, batched)
    streams a progress bar and stops with Stop. Yields ``(figure or None, progress html)``."""
    ex = registry.get(session.model)
    grid = session.require_grid()
    if session.colour_mode == CAUSAL_MODE:
        for bar in causal.trace_job(ex, session) if colour_pending(registry, session) else []:
            yield None, bar
        yield figure_for(ex, session), causal.status_html(ex, session)
        return
    if not colour_pending(registry, session):
        yield figure_for(ex, session), ""
        return
    clock = JobClock(grid.n_rows * grid.n_tokens)
    result = None
    with session.job() as stop:
        def run(on_step: Callable[..., None]):
            return token_identity(ex.lm, grid, progress=on_step, should_stop=stop.is_set)

        for kind, value in stream_callbacks(run, context=lambda: session.job_context(ex.lm)):
            if kind == "step":
                clock.done = int(value[0])
                yield None, progress_html(clock, what="token-identity cells")
            else:
                result = value
    state = "stopped" if result is None else "done"
    yield figure_for(ex, session), progress_html(clock, state, what="token-identity cells")


def figure_for(ex: Explorer, session: Session) -> dict | None:
    if session.grid is None:
        return None
    cols = column_window(session.grid, first_column(ex, session), MAX_COLUMNS, column_floor(ex, session))
    base = base_layer(ex, session, cols)
    if base is None:  # relevancy only: an empty base so the axes still show every cell
        base = ColourLayer("grid", np.zeros((session.grid.n_rows, len(cols))),
                           [["" for _ in cols] for _ in range(session.grid.n_rows)], [[0, "#f9fafb"], [1, "#f9fafb"]])
    with session.lock:
        return explore_figure(session.grid, ex.lm, edits.current_results(session), start=cols[0], width=MAX_COLUMNS,
                              floor=cols[0],
                              selected=session.selected, base=base)
