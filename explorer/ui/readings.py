"""What the side panel and the job bar show for a job over many cells.

- ``job_order``: the order a whole-grid (or column, row) job reads its cells in, so that a job
  stopped early has read the cells that matter most: content tokens before special tokens, and
  layers by their distance from the middle layer (middle layers read best; the embeddings and the
  last layers least).
- ``readings_html``: the readings of a row, a column or a selection, in order, each with its
  layer/token label and its words shaded by relevancy.
- ``progress_html``: a progress bar with cells done, cells/s and time left from the first second,
  shown beside the buttons that started the job.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
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


def readings_html(grid: Grid, cells: list[tuple[int, int]], results: InterpretationSet | None, scope: str,
                  variant: str | None = None) -> str:
    """The readings of ``cells`` in reading order (a row left to right, a column bottom-up).

    A row or a column lists every cell, "…" where not read yet. A whole grid (or any larger set) lists
    only the cells read so far (made under ``variant``, the model the session uses now), under a title
    that counts them, so a stopped job shows exactly what it read.
    """
    ordered = sorted(set(cells), key=lambda c: (c[1], c[0]) if scope == "column" else (c[0], c[1]))
    got = {}
    for layer, token in ordered:
        cell = results.get(layer, token) if results is not None else None
        if cell is not None and cell.variant == variant:
            got[(layer, token)] = cell
    listed = ordered if scope in ("row", "column") else [c for c in ordered if got.get(c) is not None
                                                            and got[c].complete]
    shown = listed[:MAX_LISTED]
    items = []
    for layer, token in shown:
        cell = got.get((layer, token))
        shown_token = html.escape(token_label(grid.tokens[token], grid.special[token]))
        label = f"<span class='sx-rlabel'>L{layer} · <code>{shown_token}</code> <small>#{token}</small></span>"
        if cell is None:
            body, complete, mean = "<span class='sx-pending'>…</span>", 0, ""
        else:
            body, complete = shaded_words(cell), int(cell.complete)
            mean = "" if cell.mean_relevancy is None else f"<small class='sx-rmean'>{cell.mean_relevancy:.2f}</small>"
        items.append(f"<li class='sx-reading' data-layer='{layer}' data-token='{token}' data-complete='{complete}'>"
                     f"{label}<span class='sx-rtext'>{body}</span>{mean}</li>")
    n_read = sum(1 for c in ordered if got.get(c) is not None and got[c].complete)
    if scope == "row" and cells:
        title = f"row {cells[0][0]}"
    elif scope == "column" and cells:
        title = f"column {cells[0][1]}"
    else:
        title = f"{n_read} of {len(ordered)} cells read"
    more = (f"<div class='sx-score'>… and {len(listed) - len(shown)} more in the table below.</div>"
            if len(listed) > len(shown) else "")
    return (f"<div class='sx-details sx-list' data-scope='{html.escape(scope)}' data-read='{n_read}' "
            f"data-total='{len(ordered)}'><div class='sx-list-title'>Readings of {html.escape(title)} "
            f"<small>(orange: words that came from the state)</small></div>"
            f"<ol class='sx-readings'>{''.join(items)}</ol>{more}</div>")


@dataclass
class JobClock:
    """Cells done over time for one job, and its time left from the first second.

    ``credited`` cells were read before the job started (a resumed job, a gallery's stored readings): they
    count as done and are never timed. Until the job has read cells of its own, the speed is ``prior()``,
    the cells/s the engine is measured to manage right now (from its decode steps, see
    ``Scheduler.meter``); afterwards the job's own speed takes over gradually, over its first
    ``settle`` cells, so the estimate never jumps from a guess to a first noisy measurement.
    """

    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    cached: int = 0  # credited: read before this job (or found in the engine's cache), not timed
    prior: Callable[[], float | None] | None = None
    settle: int = 64

    @property
    def credited(self) -> int:
        return self.cached

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        computed = self.done - self.cached
        measured = computed / elapsed if elapsed > 0 and computed > 0 else None
        prior = self.prior() if self.prior is not None else None
        if measured is None:
            return prior or 0.0
        if not prior:
            return measured
        w = min(1.0, computed / max(1, self.settle))
        return w * measured + (1 - w) * prior

    def left_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None


def progress_html(clock: JobClock, state: str = "running", what: str = "cells") -> str:
    """A progress bar with cells done, cells/s and time left (``state``: running, done, stopped)."""
    rate = clock.rate()
    left = clock.left_s()
    credited = f" ({clock.cached} read before)" if clock.cached else ""
    if state == "running":
        eta = "measuring the speed…" if left is None else f"about {_duration(left)} left"
        speed = f" · {rate:.1f} cells/s" if rate > 0 else ""
        text = f"{clock.done} / {clock.total} {what} read{credited}{speed} · {eta}"
    else:
        verb = "Done" if state == "done" else "Stopped"
        text = f"{verb}: {clock.done} / {clock.total} {what} read{credited} in {_duration(time.monotonic() - clock.started)}"
        if rate > 0 and clock.done > clock.cached:
            text += f" · {rate:.1f} cells/s"
    left_attr = "" if left is None else f"{left:.1f}"
    return (f"<div class='sx-job' data-state='{state}' data-done='{clock.done}' data-total='{clock.total}' "
            f"data-credited='{clock.cached}' data-left-s='{left_attr}'>"
            f"<progress max='{max(1, clock.total)}' value='{clock.done}'></progress>"
            f"<span class='sx-job-text'>{html.escape(text)}</span></div>")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
