"""What the side panel and the job bar show for a job over many cells.

- ``job_order``: the order a whole-grid (or column, row) job reads its cells in, so that a job
  stopped early has read the cells that matter most: content tokens before special tokens, and
  layers by their distance from the middle layer (middle layers read best; the embeddings and the
  last layers least).
- ``readings_html``: the readings of a row, a column or a selection, in order, each with its
  layer/token label and its words shaded by relevancy.
- ``progress_html``: a progress bar with cells done, cells/s and time left, shown under the
  buttons that started the job.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

from explorer.core.grid import Grid
from explorer.core.results import CellInterpretation, InterpretationSet
from explorer.viz.figure import token_label

MAX_LISTED = 160  # readings listed in the side panel (a whole grid is read in the table)


def job_order(grid: Grid, cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``cells`` sorted: content tokens first, then by distance from the middle layer, then by
    position (left to right)."""
    middle = grid.n_layers / 2
    return sorted(cells, key=lambda c: (bool(grid.special[c[1]]), abs(c[0] - middle), c[0] < middle, c[1]))


def shaded_words(cell: CellInterpretation) -> str:
    """The reading's words, each shaded by its relevancy (orange = came from the state)."""
    rel = cell.relevancy_score
    spans = []
    for i, piece in enumerate(cell.token_texts):
        r = rel[i] if rel is not None and i < len(rel) else 0.0
        alpha = min(1.0, r / 0.6)
        title = f"relevancy {r:.3f}" if rel is not None else "relevancy pending"
        spans.append(f"<span title='{title}' style='background: rgba(234,88,12,{alpha:.2f})'>{html.escape(piece)}</span>")
    return "".join(spans) or "(empty)"


def readings_html(grid: Grid, cells: list[tuple[int, int]], results: InterpretationSet | None, scope: str) -> str:
    """The readings of ``cells`` in reading order (a row left to right, a column bottom-up)."""
    ordered = sorted(set(cells), key=lambda c: (c[1], c[0]) if scope == "column" else (c[0], c[1]))
    shown = ordered[:MAX_LISTED]
    items = []
    for layer, token in shown:
        cell = results.get(layer, token) if results is not None else None
        shown_token = html.escape(token_label(grid.tokens[token], grid.special[token]))
        label = f"<span class='sx-rlabel'>L{layer} · <code>{shown_token}</code> <small>#{token}</small></span>"
        if cell is None:
            body, complete, mean = "<span class='sx-pending'>…</span>", 0, ""
        else:
            body, complete = shaded_words(cell), int(cell.complete)
            mean = "" if cell.mean_relevancy is None else f"<small class='sx-rmean'>{cell.mean_relevancy:.2f}</small>"
        items.append(f"<li class='sx-reading' data-layer='{layer}' data-token='{token}' data-complete='{complete}'>"
                     f"{label}<span class='sx-rtext'>{body}</span>{mean}</li>")
    what = {"row": f"row {cells[0][0]}" if cells else "row", "column": f"column {cells[0][1]}" if cells else "column"}
    title = what.get(scope, f"{len(ordered)} cells")
    more = f"<div class='sx-score'>… and {len(ordered) - len(shown)} more in the table below.</div>" if len(
        ordered) > len(shown) else ""
    return (f"<div class='sx-details sx-list' data-scope='{html.escape(scope)}'><div class='sx-list-title'>Readings of "
            f"{html.escape(title)} <small>(orange: words that came from the state)</small></div>"
            f"<ol class='sx-readings'>{''.join(items)}</ol>{more}</div>")


@dataclass
class JobClock:
    """Cells done over time for one job: rate and time left from the cells computed so far."""

    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    cached: int = 0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        computed = self.done - self.cached
        return computed / elapsed if elapsed > 0 and computed > 0 else 0.0

    def left_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None


def progress_html(clock: JobClock, state: str = "running", what: str = "cells") -> str:
    """A progress bar with cells done, cells/s and time left (``state``: running, done, stopped)."""
    rate = clock.rate()
    left = clock.left_s()
    if state == "running":
        eta = "estimating time left…" if left is None else f"about {_duration(left)} left"
        text = f"{clock.done} / {clock.total} {what} · {rate:.1f} cells/s · {eta} · Stop ends it"
    else:
        verb = "Done" if state == "done" else "Stopped"
        text = f"{verb}: {clock.done} / {clock.total} {what} in {_duration(time.monotonic() - clock.started)}"
        if rate > 0:
            text += f" · {rate:.1f} cells/s"
    return (f"<div class='sx-job' data-state='{state}' data-done='{clock.done}' data-total='{clock.total}'>"
            f"<progress max='{max(1, clock.total)}' value='{clock.done}'></progress>"
            f"<span class='sx-job-text'>{html.escape(text)}</span></div>")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
