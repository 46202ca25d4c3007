"""Edits made visible: the banner every tab shows, stale readings, and redrawing after an edit changes.

A reading records the model variant it was made under (``CellInterpretation.variant``: the control
edit's id, None for the stock model). When the session's edit changes (Apply, Revert, loading an
edit, importing a session) the grid is captured again under the new variant, so a click reads the
model as it now is; earlier readings are kept but shown greyed as made under another variant.
"""

from __future__ import annotations

import html
import time

import pandas as pd

from explorer.core.results import CellInterpretation, InterpretationSet
from explorer.methods.control import applied
from explorer.ui.session import ModelRegistry, Session

TABLE_COLUMNS = ["layer", "token", "token_decoded", "interpretation", "mean_relevancy", "variant", "template",
                 "n_placeholders", "k", "max_new_tokens", "strength"]


def current_variant(session: Session) -> str | None:
    """The variant new readings of this session are made under (None: stock model): its edit's id,
    joined with its concept steering's when that is applied (as recorded by the session's last job)."""
    edit = session.edit
    if session.concept_steer is not None and session.variant_tag is not None:
        return session.variant_tag
    return None if edit is None else edit.edit_id  # type: ignore[attr-defined]


def variant_name(variant: str | None) -> str:
    return "the stock model" if variant is None else f"edit {variant}"


def stale_note(session: Session, cell: CellInterpretation | None) -> str:
    """A sentence when ``cell`` was made under another variant than the session's current one, else ""."""
    if cell is None or cell.variant == current_variant(session):
        return ""
    if cell.variant is None:
        return "Made before the edit (stock model): click the cell again to read it with the edit."
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
    """The edit banner shown above every tab (an empty, hidden element when no edit is active)."""
    edit = session.edit
    if edit is None:
        return "<div id='sx-banner-body' data-active='0'></div>"
    meta = getattr(edit, "meta", {}) or {}
    since = time.strftime("%H:%M:%S UTC", time.gmtime(session.edit_since or time.time()))
    what = html.escape(str(meta.get("kind") or meta.get("method") or "control"))
    target = meta.get("target_desc") or meta.get("target") or meta.get("concept")
    towards = f", towards {html.escape(str(target))}" if target else ""
    return (f"<div id='sx-banner-body' class='sx-edit-banner' data-active='1' data-edit='{html.escape(edit.edit_id)}'>"
            f"<b>Edit {html.escape(edit.edit_id)} is active</b>: {what} edit of block {edit.layer - 1}'s MLP "
            f"(row {edit.layer}){towards}, since {since}. Every grid and reading in this session uses it; "
            "Revert it in the Control tab.</div>")


def control_status(session: Session) -> str:
    """The Control tab's status line for the session's edit (same words as the tab's own)."""
    if session.edit is None:
        return "No edit applied."
    meta = getattr(session.edit, "meta", {}) or {}
    return (f"Edit **{session.edit.edit_id}** ({meta.get('kind', '?')}, layer {session.edit.layer}) is applied to "
            "your session.")


def regrid_if_edit_changed(registry: ModelRegistry, session: Session) -> bool:
    """Capture the session's grid again when it was made under another variant than the current one.

    Earlier readings stay in the session (their ``variant`` marks them stale). Returns True when
    the grid was recaptured.
    """
    grid = session.grid
    if grid is None or grid.provenance.get("edit_id") == current_variant(session):
        return False
    ex = registry.get(session.model)
    with applied(ex.lm, session.edit):  # type: ignore[arg-type]
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
