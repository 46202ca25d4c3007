"""The gallery: curated saved sessions that open instantly, and links to shared sessions.

A gallery entry is an exported session file (``selfie-explorer-session/1``) in
``explorer/data/gallery/`` or in a folder named by ``SELFIE_GALLERY_DIR`` (``os.pathsep``-separated).
An optional top-level ``"gallery"`` object gives its ``title``, a short ``explanation`` and the
``selected`` cell to show first; a plain exported session works too (its file name is its title).
Entries are sorted by file name. Opening one re-runs its prompt once (a single forward pass, for
the grid) and puts the stored readings back: readings are never recomputed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from explorer.core.data import DATA_DIR
from explorer.core.errors import InputError
from explorer.methods.session_io import export_session
from explorer.ui import edits, explore, grid_view, sharing
from explorer.ui.session import ModelRegistry, Session

GALLERY_DIR = DATA_DIR / "gallery"
_SHARE_ID = re.compile(r"^[0-9a-f]{8,32}$")


@dataclass(frozen=True)
class GalleryEntry:
    """One gallery file: ``name`` is its file stem (the ``?gallery=`` link uses it)."""

    name: str
    title: str
    explanation: str
    path: Path
    selected: tuple[int, int] | None = None


def gallery_dirs() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get("SELFIE_GALLERY_DIR", "").split(os.pathsep) if p]
    return [GALLERY_DIR, *extra]


def _entry(path: Path) -> GalleryEntry | None:
    """The entry a file makes, or None for a file that is not a well-formed session (a gallery folder may
    hold anything: a damaged, deeply nested or crafted file is skipped, never a traceback)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("selfie-explorer-session/"):
        return None
    meta = data.get("gallery") if isinstance(data.get("gallery"), dict) else {}
    sel = meta.get("selected")
    selected = None
    if (isinstance(sel, list) and len(sel) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 100_000 for v in sel)):
        selected = (int(sel[0]), int(sel[1]))
    title = str(meta.get("title") or path.stem.replace("_", " "))
    explanation = str(meta.get("explanation") or f"A saved session: {data.get('prompt', '')!r}.")
    return GalleryEntry(path.stem, title, explanation, path, selected)


def entries() -> list[GalleryEntry]:
    """Every gallery entry, the shipped ones first, each folder sorted by file name (later duplicates dropped)."""
    out: dict[str, GalleryEntry] = {}
    for folder in gallery_dirs():
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            entry = _entry(path)
            if entry is not None and entry.name not in out:
                out[entry.name] = entry
    return list(out.values())


def find(name: str) -> GalleryEntry:
    for entry in entries():
        if entry.name == name:
            return entry
    raise InputError(f"There is no gallery entry named '{name}'.")


def open_text(registry: ModelRegistry, session: Session, text: str,
              selected: tuple[int, int] | None = None) -> explore.View:
    """Restore a saved session from its text and show its view's cell, or ``selected``, or its first reading."""
    view = sharing.restore(registry, session, text)
    results = session.results
    if selected is None:
        selected = session.selected
    if selected is None and results is not None and results.cells:
        first = results.cells[0]
        selected = (first.layer, first.token)
    if selected is not None and session.grid is not None:
        session.grid.check_cell(*selected)
        session.selected = selected
    settled = explore.settled_view(registry, session)
    if settled is None:
        return view
    return explore.View(settled.figure, settled.details, settled.table, view.status)


def open_entry(registry: ModelRegistry, session: Session, name: str) -> tuple[GalleryEntry, explore.View]:
    """Open an entry into ``session``. The first opening in this process runs the prompt once; later
    ones reuse that grid (grids are shared read-only, readings copied), so they are instant.

    The session keeps what is its own: its concepts, its colour mode (unless it names a concept it no
    longer has) and its concept steering; the entry brings its prompt, readings, settings and control
    edit. Under a steering the grid is captured again with it, and the stored readings (made with the
    entry's model) are shown greyed until their cells are read again.
    """
    entry = find(name)
    key = (entry.name, entry.path.stat().st_mtime, registry.check_allowed(""))
    with registry.gallery_lock:  # one opening per entry; kept by the registry (bounded), keyed by content
        opened = registry.memo.get(("gallery", *key))
        if opened is None:
            first = Session(model=session.model)
            view = open_text(registry, first, entry.path.read_text(encoding="utf-8"), entry.selected)
            opened = (first, view)
            registry.memo.put(("gallery", *key), opened)
            registry.forget_session(first)
    first, view = opened
    ex = registry.get(first.model)
    with session.lock:
        session.model = first.model
        session.set_model_state(session.model_state.with_edit(first.edit), ex.lm)  # type: ignore[arg-type]
        session.new_grid(first.grid)  # type: ignore[arg-type]
        session.results = copy.deepcopy(first.results)
        session.selected, session.settings = first.selected, dict(first.settings)
        session.colour_mode = grid_view.usable_colour_mode(session, session.colour_mode)
    edits.regrid_if_state_changed(registry, session)
    registry.budget.touch(session)
    settled = explore.settled_view(registry, session)
    if settled is not None:
        view = explore.View(settled.figure, settled.details, settled.table, view.status)
    status = f"Gallery: **{entry.title}**. {view.status}"
    if not session.model_state.is_stock and session.concept_steer is not None:
        status += (f" The grid was captured with {session.model_state.describe()}; the stored readings were made "
                   "without it and are greyed until you read their cells again.")
    return entry, replace(view, status=status)


def warm(registry: ModelRegistry) -> threading.Thread:
    """Open the first entry in the background (at start-up), so the first visitor's page is instant."""
    def work() -> None:
        items = entries()
        if items:
            open_entry(registry, Session(), items[0].name)

    t = threading.Thread(target=work, name="gallery-warm", daemon=True)
    t.start()
    return t


def share_dir() -> Path:
    """Where "Share a link" puts sessions (``SELFIE_SHARE_DIR``, else a folder in the temp dir)."""
    d = Path(os.environ.get("SELFIE_SHARE_DIR") or Path(tempfile.gettempdir()) / "selfie-explorer-shared")
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class ShareQuota:
    """How much the share folder may hold: files, megabytes, and how long a link lives (README lists them)."""

    max_files: int = 200
    max_mb: float = 256.0
    ttl_hours: float = 168.0

    @classmethod
    def from_env(cls) -> ShareQuota:
        return cls(int(os.environ.get("SELFIE_SHARE_MAX_FILES", "200")),
                   float(os.environ.get("SELFIE_SHARE_MAX_MB", "256")),
                   float(os.environ.get("SELFIE_SHARE_TTL_HOURS", "168")))


_SHARE_LOCK = threading.Lock()


def save_shared(session: Session, quota: ShareQuota | None = None) -> str:
    """Export the session into the share folder; returns the id for a ``?session=ID`` link.

    The id is a hash of the file's content, so sharing the same view twice writes one file (and
    refreshes its age). Expired links are removed, then the oldest ones until the folder fits the
    quota with the new file; a single view larger than the whole quota is refused with a sentence.
    """
    quota = quota or ShareQuota.from_env()
    text = export_session(sharing.snapshot(session)).encode("utf-8")
    if len(text) > quota.max_mb * 2**20:
        raise InputError(f"This view is too large to share from this server ({len(text) / 2**20:.1f} MB; the share "
                         f"limit is {quota.max_mb:g} MB): download it with Share this session instead.")
    share_id = hashlib.sha256(text).hexdigest()[:16]
    folder = share_dir()
    path = folder / f"{share_id}.json"
    with _SHARE_LOCK:
        if path.is_file():
            os.utime(path)  # the same view shared again: one file, a fresh age
            return share_id
        _prune(folder, quota, incoming=len(text))
        tmp = folder / f".{share_id}.{uuid.uuid4().hex[:6]}.tmp"
        tmp.write_bytes(text)
        tmp.replace(path)
    return share_id


def _prune(folder: Path, quota: ShareQuota, incoming: int = 0) -> None:
    """Remove expired share files, then the oldest ones until ``incoming`` more bytes fit the quota."""
    now = time.time()
    files = []
    for f in folder.glob("*.json"):
        try:
            st = f.stat()
        except OSError:
            continue
        if now - st.st_mtime > quota.ttl_hours * 3600:
            f.unlink(missing_ok=True)
        else:
            files.append((st.st_mtime, st.st_size, f))
    files.sort()
    total = sum(size for _, size, _ in files)
    while files and (len(files) + 1 > quota.max_files or total + incoming > quota.max_mb * 2**20):
        _, size, f = files.pop(0)
        f.unlink(missing_ok=True)
        total -= size


def open_shared(registry: ModelRegistry, session: Session, share_id: str) -> explore.View:
    if not _SHARE_ID.match(share_id or ""):
        raise InputError("That session link is not valid.")
    path = share_dir() / f"{share_id}.json"
    if not path.is_file():
        raise InputError("That shared session no longer exists on this server (links expire, and the oldest are "
                         "removed when the server's share space is full).")
    view = open_text(registry, session, path.read_text(encoding="utf-8"))
    view.status = f"Shared session {share_id}. {view.status}"
    return view
