"""A session as a file and back: export (with the view: selected cell, colour mode, window), import,
and the downloads of its results.

The export holds the prompt, model, settings, every reading, the control edit and the view, so a
shared link or an imported file opens on the same thing the sender saw: the same cell selected,
the same colouring, the same settings. Import builds everything aside first and puts it in place in
one step.
"""

from __future__ import annotations

import html

import gradio as gr

from explorer.api import Explorer
from explorer.core.errors import InputError
from explorer.core.prompts import PRESETS
from explorer.core.results import InterpretationSet
from explorer.methods.model_state import ModelState
from explorer.ui import grid_view
from explorer.ui.explore import View, details_html, figure_for, results_table
from explorer.ui.session import ModelRegistry, Session
from explorer.viz.figure import explore_figure


def plural(n: int, word: str) -> str:
    """``1 result``, ``2 results``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def snapshot(session: Session):
    """The session as a shareable :class:`SessionSnapshot` (its view included)."""
    from explorer.methods.session_io import SessionSnapshot

    grid = session.require_grid()
    edit = None
    if session.edit is not None:
        edit = {"edit_id": session.edit.edit_id, **{k: v for k, v in session.edit.meta.items() if k != "losses"},
                "layer": session.edit.layer, "safetensors_base64": session.edit.to_base64()}
    view = {"selected": list(session.selected) if session.selected is not None else None,
            "colour_mode": session.colour_mode, "column_start": int(session.column_start),
            "hide_system": bool(session.hide_system)}
    return SessionSnapshot(model=session.model, prompt=grid.prompt, chat=grid.chat, settings=dict(session.settings),
                           results=session.results, edit=edit, provenance=dict(grid.provenance),
                           extra={"view": view})


def restore(registry: ModelRegistry, session: Session, text: str) -> View:
    """Import a shared session: re-run its prompt (same model) and put its results and view back as they were.

    The file's control edit replaces the session's; a concept steering the session holds stays (files
    do not carry one) and the grid is captured under both. Everything is built aside first (model,
    edit, grid, results) and put in place in one step, so a file that fails at any point leaves the
    session exactly as it was.
    """
    from explorer.methods.session_io import check_against_model, import_session

    snap = import_session(text)
    ex = registry.get(snap.model)
    check_against_model(snap, ex.lm.n_layers, len(ex.lm.tokenizer))  # k and token ids: only the model bounds them
    edit, note = _imported_edit(ex, snap.edit)
    state = ModelState(edit, session.concept_steer)  # type: ignore[arg-type]
    with state.applied(ex.lm):
        grid = ex.run(snap.prompt, chat=bool(snap.chat))
    results = InterpretationSet(prompt=grid.prompt, provenance=dict(grid.provenance))
    for cell in snap.results.cells:  # type: ignore[union-attr]
        grid.check_cell(cell.layer, cell.token)
        results.add(cell)
    view = snap.extra.get("view") or {}
    selected = view.get("selected")
    if selected is not None:
        grid.check_cell(int(selected[0]), int(selected[1]))
    with session.lock:
        session.model = snap.model
        session.set_model_state(state, ex.lm)
        session.new_grid(grid)
        session.results = results
        session.settings = dict(snap.settings)
        if selected is not None:
            session.selected = (int(selected[0]), int(selected[1]))
        session.column_start = int(view.get("column_start") or 0)
        session.hide_system = bool(view.get("hide_system", session.hide_system))
        if view.get("colour_mode"):
            session.colour_mode = grid_view.usable_colour_mode(session, str(view["colour_mode"]))
    registry.budget.touch(session)
    n = len(snap.results.cells)  # type: ignore[union-attr]
    return View(figure_for(ex, session), details_html(ex, grid, None, None, None), results_table(session),
                f"Imported {plural(n, 'result')} for {html.escape(repr(snap.prompt))} "
                f"({html.escape(snap.model)}).{html.escape(note)}")


def _imported_edit(ex: Explorer, recorded: dict | None):
    """The control edit a session file carries (checked against the model), and a note for the status."""
    if not recorded:
        return None, ""
    if not recorded.get("safetensors_base64"):
        return None, (f" The original view had control edit {recorded.get('edit_id')}, which this file does not "
                      "carry; results are as exported, new readings use the unedited model.")
    from explorer.core.errors import EditError
    from explorer.methods.control import Edit

    try:
        edit = Edit.from_base64(recorded["safetensors_base64"], ex.lm)
    except EditError as e:
        raise InputError(f"The session's control edit cannot be restored: {e}") from e
    if recorded.get("edit_id") not in (None, edit.edit_id):
        raise InputError("The session's control edit does not match its recorded id; the file is damaged.")
    return edit, f" Its control edit {edit.edit_id} is applied again."


def export_files(ex: Explorer, session: Session) -> tuple[str, str, str]:
    """CSV, JSON (with provenance) and a standalone HTML figure of the session's results."""
    import plotly.io as pio

    grid = session.require_grid()
    results = session.results
    if results is None or not results.cells:
        raise InputError("Nothing to download yet: interpret some cells first.")
    d = session.workdir()
    csv_path, json_path, html_path = d / "selfie_results.csv", d / "selfie_results.json", d / "selfie_grid.html"
    results.to_csv(csv_path)
    results.to_json(json_path, with_provenance=True)
    fig = explore_figure(grid, ex.lm, results, start=session.column_start)
    html_path.write_text(pio.to_html(fig, include_plotlyjs=True, full_html=True), encoding="utf-8")
    return str(csv_path), str(json_path), str(html_path)


def view_values(sess: Session) -> list:
    """The Explore widgets a saved view sets (``ExploreWidgets.view_outputs``): model, colour menu and its
    help, the interpretation settings and the chat wrap's hiding, from the session."""
    st = sess.settings or {}
    template = str(st.get("template") or "refers_to")
    if template in PRESETS:
        preset, user, lead = template, PRESETS[template].user, PRESETS[template].lead_in
    else:
        user, _, lead = template.partition("|")
        preset = "custom"
    num = [st.get(k) if isinstance(st.get(k), (int, float)) else gr.skip()
           for k in ("n_placeholders", "k", "max_new_tokens", "strength", "batch_size")]
    colour = gr.update(choices=grid_view.colour_menu(sess), value=sess.colour_mode)
    return [sess.model, colour, grid_view.colour_help(sess), preset, user, lead, *num[:4], num[4],
            sess.hide_system]
