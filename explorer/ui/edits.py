"""Model changes made visible: the banner every tab shows, stale readings, and redrawing after a change.

A session changes the model in two ways, held together as its ``ModelState``: a control edit and a
concept steering. A reading records the model variant it was made under (``CellInterpretation.variant``:
the edit's id and the steering's tag, None for the stock model). When the state changes (Apply,
Steer, Revert, loading an edit or a concept, importing a session) the grid is captured again under
the new variant, so a click reads the model as it now is; earlier readings are kept but shown
greyed as made under another variant.
"""

from __future__ import annotations

import html
import time

import pandas as pd

from explorer.core.results import CellInterpretation, InterpretationSet
from explorer.ui.session import ModelRegistry, Session

TABLE_COLUMNS = ["layer", "token", "token_decoded", "interpretation", "mean_relevancy", "variant", "template",
                 "n_placeholders", "k", "max_new_tokens", "strength"]


def current_variant(session: Session) -> str | None:
    """The variant new readings of this session are made under (None: the stock model): its edit's id,
    joined with its concept steering's tag when one is applied."""
    return session.current_variant()


def variant_name(variant: str | None) -> str:
    """A variant tag in words: "the stock model", "edit edit-…", "GCAV steering gcav-…" (joined by "and")."""
    if variant is None:
        return "the stock model"
    names: list[str] = []
    for part in variant.split("+"):
        base = part.split("@")[0]
        kind = "GCAV steering" if base.startswith("gcav-") else (
            "fixed steering" if base.startswith("fixed-") else "edit")
        name = f"{kind} {base}"
        if name not in names:
            names.append(name)
    return " and ".join(names)


def stale_note(session: Session, cell: CellInterpretation | None) -> str:
    """A sentence when ``cell`` was made under another variant than the session's current one, else ""."""
    if cell is None or cell.variant == current_variant(session):
        return ""
    if cell.variant is None:
        return ("Made with the stock model, before the change shown in the banner: click the cell again to read "
                "it with the model you use now.")
    return f"Made with {variant_name(cell.variant)}, not the model you use now: click the cell again to re-read it."


def current_results(session: Session) -> InterpretationSet | None:
    """The session's readings made under its current variant (what the grid overlay shows)."""
    res = session.results
    if res is None:
        return None
    variant = current_variant(session)
    with session.lock:
        cells = [c for c in res.cells if c.variant == variant]
    return InterpretationSet(prompt=res.prompt, cells=cells, provenance=res.provenance)


def results_frame(session: Session) -> pd.DataFrame:
    """The Results table: one row per reading with the settings and edit that made it; stale rows marked."""
    if session.results is None or not session.results.cells:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    frame = session.results.to_frame()
    frame["mean_relevancy"] = frame["mean_relevancy"].map(lambda v: None if v is None else round(float(v), 3))
    variant = current_variant(session)
    stale = frame["variant"].map(lambda v: (None if v != v else v) != variant)  # NaN-safe comparison
    frame["interpretation"] = [f"[{variant_name(None if e != e else e)}] {t}" if s else t
                               for t, e, s in zip(frame["interpretation"], frame["variant"], stale)]
    frame["variant"] = frame["variant"].map(lambda v: "none" if v is None or v != v else v)
    return frame[TABLE_COLUMNS]


def banner_html(session: Session) -> str:
    """The banner above every tab: one line per change the session makes to the model (its control edit,
    its concept steering), each with its own Revert; an empty, hidden element for the stock model."""
    state = session.model_state
    if state.is_stock:
        return "<div id='sx-banner-body' data-active='0' data-edit='' data-steering='0'></div>"
    parts = []
    edit = state.edit
    if edit is not None:
        meta = getattr(edit, "meta", {}) or {}
        what = html.escape(str(meta.get("kind") or meta.get("method") or "control"))
        target = meta.get("target_desc") or meta.get("target") or meta.get("concept")
        towards = f", towards {html.escape(str(target))}" if target else ""
        parts.append(("edit", f"<b>Edit {html.escape(edit.edit_id)} is active</b>: {what} edit of block "
                              f"{edit.layer - 1}'s MLP (row {edit.layer}){towards}, since "
                              f"{_since(session.edit_since)}.", "Revert edit"))
    if state.steering is not None:
        parts.append(("steering", f"<b>Concept steering is active</b>: {html.escape(state.steering.describe())}, "
                                  f"since {_since(session.steer_since)}.", "Revert steering"))
    lines = "".join(f"<div class='sx-banner-part' data-part='{part}'>{text} <button type='button' "
                    f"class='sx-revert-part' data-part='{part}'>{label}</button></div>" for part, text, label in parts)
    edit_id = html.escape(edit.edit_id) if edit is not None else ""
    return (f"<div id='sx-banner-body' class='sx-edit-banner' data-active='1' data-edit='{edit_id}' "
            f"data-steering='{int(state.steering is not None)}' role='status'>{lines}<div class='sx-banner-note'>"
            "Every grid and reading in this session, on every tab, uses this model.</div></div>")


def _since(t: float | None) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t or time.time()))


def control_status(session: Session) -> str:
    """The Control tab's status line for the session's edit (same words as the tab's own)."""
    if session.edit is None:
        return "No edit applied."
    meta = getattr(session.edit, "meta", {}) or {}
    return (f"Edit **{session.edit.edit_id}** ({meta.get('kind', '?')}, layer {session.edit.layer}) is applied to "
            "your session.")


def steer_status(session: Session) -> str:
    """The Concepts tab's steering status line for the session's concept steering."""
    steering = session.concept_steer
    if steering is None:
        return "No concept steering applied."
    return (f"{html.escape(steering.describe())} is applied to your session only: every grid and reading "  # type: ignore[attr-defined]
            "uses it (the banner above the tabs says so). Revert removes it.")


def grid_status(session: Session, lm_name: str) -> str:
    """Explore's status line after the grid was captured again under a changed model state."""
    variant = current_variant(session)
    with session.lock:
        stale = sum(1 for c in (session.results.cells if session.results else []) if c.variant != variant)
    note = (f"; {stale} reading{'s' if stale != 1 else ''} made with another model "
            f"{'are' if stale != 1 else 'is'} greyed until you click {'their cells' if stale != 1 else 'its cell'} "
            "again" if stale else "")
    return (f"The grid of {html.escape(lm_name)} was captured again with "
            f"{html.escape(session.model_state.describe())}{note}.")


def regrid_if_state_changed(registry: ModelRegistry, session: Session) -> bool:
    """Capture the session's grid again when it was made under another model state than the current one
    (its edit and its concept steering).

    Earlier readings stay in the session (their ``variant`` marks them stale). Returns True when
    the grid was recaptured.
    """
    grid = session.grid
    if grid is None:
        return False
    ex = registry.get(session.model)
    if grid.provenance.get("edit_id") == session.state_variant(ex.lm):
        return False
    with session.job_context(ex.lm):
        new = ex.run(grid.prompt, chat=grid.chat)
    with session.lock:
        old = session.results
        selected, start = session.selected, session.column_start
        session.new_grid(new)
        session.selected, session.column_start = selected, start
        for cell in old.cells if old is not None else []:
            session.results.add(cell)  # type: ignore[union-attr]
    registry.budget.touch(session)
    return True


regrid_if_edit_changed = regrid_if_state_changed
