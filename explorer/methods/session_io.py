"""Sharing: a whole session as JSON with provenance, and "copy as Python" for the current view.

The export holds everything needed to see the same thing again: model, prompt, chat wrapping,
interpretation settings, every result, the control edit (its metadata, and its tensors as
base64-encoded safetensors bytes: no pickle) and the view (``"view"``: the selected cell, the colour
mode, the first column shown and whether the chat template's system text is hidden). Import restores
identical results without recomputing them, and the edit and the view with them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

from explorer.core.errors import InputError
from explorer.core.results import SETTING_COLUMNS, CellInterpretation, InterpretationSet, public_provenance
from explorer.core.version import __version__
from explorer.interpret.settings import MAX_BATCH_SIZE, MAX_NEW_TOKENS_LIMIT

FORMAT = "selfie-explorer-session/1"
EXTRA_KEYS = ("gallery", "view")  # optional top-level keys kept through import and export
VIEW_KEYS = ("selected", "colour_mode", "column_start", "hide_system")  # what a shared view restores


@dataclass
class SessionSnapshot:
    """What a shared session contains; ``settings`` uses the names of ``Explorer.interpret``."""

    model: str
    prompt: str
    chat: bool = False
    settings: dict = field(default_factory=dict)
    results: InterpretationSet | None = None
    edit: dict | None = None
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other top-level keys of the file (a gallery entry's text)


def export_session(snap: SessionSnapshot) -> str:
    payload = {
        "format": FORMAT,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "explorer_version": __version__,
        "model": public_provenance({"model": snap.model})["model"],
        "prompt": snap.prompt,
        "chat": snap.chat,
        "settings": snap.settings,
        "provenance": public_provenance(snap.provenance),
        "edit": snap.edit,
        "results": json.loads(snap.results.to_json()) if snap.results is not None else [],
    }
    if snap.extra:
        payload.update({k: v for k, v in snap.extra.items() if k not in payload})
    return json.dumps(payload, ensure_ascii=False, indent=1, default=str)


def import_session(text: str) -> SessionSnapshot:
    """Parse a shared session; a file that does not follow the format gets one sentence saying where."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:
        raise InputError("That file is not JSON.") from e
    check_session_schema(data)
    results = InterpretationSet(prompt=data["prompt"], provenance=dict(data.get("provenance") or {}))
    for r in data.get("results") or []:
        results.add(CellInterpretation(
            layer=r["layer"], token=r["token"], token_decoded=r["token_decoded"], interpretation=r["interpretation"],
            generated_ids=list(r.get("generated_ids") or []), token_texts=list(r.get("token_texts") or []),
            p_with=[], relevancy_score=r.get("relevancy_score"), variant=r.get("variant") or r.get("edit_id") or None,
            settings={k: r[k] for k in SETTING_COLUMNS if r.get(k) is not None} or None))
    return SessionSnapshot(model=data["model"], prompt=data["prompt"], chat=bool(data.get("chat")),
                           settings=dict(data.get("settings") or {}), results=results, edit=data.get("edit"),
                           provenance=dict(data.get("provenance") or {}),
                           extra={k: v for k, v in data.items() if k in EXTRA_KEYS})


MAX_RESULTS = 100_000
MAX_TEXT = 100_000
MAX_INDEX = 100_000  # layers and token positions; the model and the prompt bound them further on import
MAX_TOKEN_ID = 2**31 - 1  # ids are checked against the model's vocabulary on import
MAX_PLACEHOLDERS = 64  # the engine's bound on K
MAX_STRENGTH = 4.0  # the engine's bound on the injection strength


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_str(v, limit: int = MAX_TEXT) -> bool:
    return isinstance(v, str) and len(v) <= limit


def _scalar_map(v) -> bool:
    return isinstance(v, dict) and len(v) <= 200 and all(
        isinstance(k, str) and (v[k] is None or isinstance(v[k], (bool, str)) or _is_num(v[k])) for k in v)


def check_session_schema(data) -> None:
    """The session format written out in code: required keys, their types and sizes.

    Raises :class:`InputError` naming the first field that does not fit, so a crafted or damaged
    file is answered with a sentence instead of a failure deep in the import.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"That file is not a SelfIE Explorer session ({FORMAT}).")
    for key in ("model", "prompt"):
        if key not in data:
            raise InputError(f"The session file has no '{key}'.")
        if not _is_str(data[key], 500 if key == "model" else MAX_TEXT) or not data[key].strip():
            raise InputError(f"The session file's '{key}' must be non-empty text of reasonable length.")
    if not isinstance(data.get("chat", False), bool):
        raise InputError("The session file's 'chat' must be true or false.")
    for key in ("settings", "provenance"):
        if data.get(key) is not None and not _scalar_map(data[key]):
            raise InputError(f"The session file's '{key}' must be an object of plain values.")
    problem = _settings_problem(data.get("settings") or {})
    if problem:
        raise InputError(f"The session file's settings are out of range: {problem}.")
    _check_gallery(data.get("gallery"))
    edit = data.get("edit")
    if edit is not None:
        if not isinstance(edit, dict):
            raise InputError("The session file's 'edit' must be an object or null.")
        if "layer" in edit and not (_is_int(edit["layer"]) and 0 <= edit["layer"] < MAX_INDEX):
            raise InputError("The session file's edit layer must be a whole, non-negative layer number.")
        if edit.get("edit_id") is not None and not _is_str(edit["edit_id"], 100):
            raise InputError("The session file's edit id must be short text.")
        if edit.get("safetensors_base64") is not None and not isinstance(edit["safetensors_base64"], str):
            raise InputError("The session file's edit tensors must be base64 text.")
    problem = _view_problem(data.get("view"))
    if problem:
        raise InputError(f"The session file's 'view' {problem}.")
    results = data.get("results", [])
    if not isinstance(results, list) or len(results) > MAX_RESULTS:
        raise InputError(f"The session file's 'results' must be a list of at most {MAX_RESULTS} readings.")
    for i, r in enumerate(results):
        problem = _result_problem(r)
        if problem:
            raise InputError(f"Reading {i + 1} of the session file {problem}.")


def _view_problem(view) -> str | None:
    if view is None:
        return None
    if not isinstance(view, dict) or set(view) - set(VIEW_KEYS):
        return f"must be an object with only {', '.join(VIEW_KEYS)}"
    sel = view.get("selected")
    if sel is not None and (not isinstance(sel, list) or len(sel) != 2 or not all(
            _is_int(x) and 0 <= x < 100_000 for x in sel)):
        return "has a 'selected' cell that is not [layer, token]"
    if view.get("colour_mode") is not None and not _is_str(view["colour_mode"], 200):
        return "has a 'colour_mode' that is not short text"
    start = view.get("column_start")
    if start is not None and (not _is_int(start) or not 0 <= start < 100_000):
        return "has a 'column_start' that is not a whole, non-negative number"
    if view.get("hide_system") is not None and not isinstance(view["hide_system"], bool):
        return "has a 'hide_system' that is not true or false"
    return None


def _result_problem(r) -> str | None:
    if not isinstance(r, dict):
        return "is not an object"
    for key in ("layer", "token"):
        if not _is_int(r.get(key)) or not 0 <= r[key] < 100_000:
            return f"needs a whole, non-negative '{key}'"
    for key in ("token_decoded", "interpretation"):
        if not _is_str(r.get(key)):
            return f"needs a text '{key}'"
    ids = r.get("generated_ids") or []
    if not isinstance(ids, list) or len(ids) > 4096 or not all(_is_int(x) and 0 <= x <= MAX_TOKEN_ID for x in ids):
        return "has 'generated_ids' that are not a list of token ids"
    for key in ("variant", "edit_id"):  # files written before the column was named "variant" use "edit_id"
        if r.get(key) is not None and not _is_str(r[key], 500):
            return f"has a '{key}' that is not short text"
    texts = r.get("token_texts") or []
    if not isinstance(texts, list) or len(texts) > 4096 or not all(_is_str(x, 1000) for x in texts):
        return "has 'token_texts' that are not a list of short texts"
    rel = r.get("relevancy_score")
    if rel is not None and (not isinstance(rel, list) or len(rel) > 4096 or not all(_is_num(x) for x in rel)):
        return "has a 'relevancy_score' that is not a list of finite numbers"
    if rel is not None and not all(0.0 <= x <= 1.0 + 1e-6 for x in rel):
        return "has a 'relevancy_score' outside 0 to 1 (it is a difference of two probabilities)"
    problem = _settings_problem({k: r[k] for k in SETTING_COLUMNS if r.get(k) is not None})
    return f"has settings out of range: {problem}" if problem else None


# The interpretation settings a session records, with the ranges the engine accepts.
_INT_SETTINGS = {"n_placeholders": ("number of placeholders", 1, MAX_PLACEHOLDERS),
                 "k": ("injection layer k", 0, MAX_INDEX - 1),
                 "max_new_tokens": ("max new tokens", 1, MAX_NEW_TOKENS_LIMIT),
                 "batch_size": ("batch size", 1, MAX_BATCH_SIZE)}


def _settings_problem(settings: dict) -> str | None:
    """What is wrong with recorded settings (session-wide or one reading's), or None."""
    for key, (name, lo, hi) in _INT_SETTINGS.items():
        v = settings.get(key)
        if v is None or (key == "batch_size" and v == "auto"):
            continue
        if not _is_int(v) or not lo <= v <= hi:
            return f"{name} {_shown(v)} is not a whole number from {lo} to {hi}"
    v = settings.get("strength")
    if v is not None and (not _is_num(v) or not 0 < v <= MAX_STRENGTH):
        return f"injection strength {_shown(v)} is not a number above 0 and at most {MAX_STRENGTH:g}"
    for key in ("template", "template_user", "template_lead_in"):
        if settings.get(key) is not None and not _is_str(settings[key], 10_000):
            return f"'{key}' is not text of reasonable length"
    return None


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 30 else text[:29] + "…"


def _check_gallery(g) -> None:
    """The optional gallery block: a title, an explanation and the cell shown first."""
    if g is None:
        return
    if not isinstance(g, dict):
        raise InputError("The session file's 'gallery' must be an object.")
    for key in ("title", "explanation"):
        if g.get(key) is not None and not _is_str(g[key], 2000):
            raise InputError(f"The session file's gallery {key} must be short text.")
    sel = g.get("selected")
    if sel is not None and not (isinstance(sel, list) and len(sel) == 2
                                and all(_is_int(x) and 0 <= x < MAX_INDEX for x in sel)):
        raise InputError("The session file's gallery 'selected' must be a [layer, token] pair of whole numbers.")


def check_against_model(snap: SessionSnapshot, n_layers: int, vocab_size: int) -> None:
    """What only the model can bound: the injection layer k and every generated token id.

    ``n_layers`` is the model's number of blocks; ``vocab_size`` its tokenizer's length.
    """
    cells = snap.results.cells if snap.results else []
    for where, settings in [("settings use", snap.settings)] + [
            (f"reading at layer {c.layer}, token {c.token} uses", c.settings or {}) for c in cells]:
        k = settings.get("k")
        if k is not None and k >= n_layers:
            raise InputError(f"The session file's {where} injection layer k {k}, but this model takes k from 0 "
                             f"to {n_layers - 1}.")
    for c in cells:
        bad = next((i for i in c.generated_ids if i >= vocab_size), None)
        if bad is not None:
            raise InputError(f"The session file's reading at layer {c.layer}, token {c.token} holds token id {bad}, "
                             f"outside this model's vocabulary of {vocab_size} tokens.")


_SETTING_NAMES = ("template", "n_placeholders", "k", "max_new_tokens", "strength", "batch_size")


def copy_as_python(snap: SessionSnapshot) -> str:
    """A runnable snippet that reproduces the session's table with the public API."""
    cells = sorted({(c.layer, c.token) for c in (snap.results.cells if snap.results else [])})
    settings = {k: snap.settings[k] for k in _SETTING_NAMES if k in snap.settings}
    args = "".join(f", {k}={v!r}" for k, v in settings.items())
    lines = [
        "# Reproduces a SelfIE Explorer view (selfie-explorer " + __version__ + ")",
        "from explorer.api import Explorer",
        "",
        f"ex = Explorer.load({snap.model!r})",
        f"grid = ex.run({snap.prompt!r}, chat={snap.chat!r})",
        f"res = ex.interpret(grid, {cells!r}{args})",
        "print(res.to_frame(compat=True).to_string())",
    ]
    if snap.edit:
        # The edit's tensors are in the session file, not in the snippet: load them from there.
        lines[1:1] = ["import json", "from explorer.methods.control import Edit, applied"]
        at = lines.index(f"ex = Explorer.load({snap.model!r})") + 1
        lines[at:at] = [
            f"# the view had control edit {snap.edit.get('edit_id')}: it travels in the exported session file",
            'session = json.load(open("selfie_session.json", encoding="utf-8"))',
            'edit = Edit.from_base64(session["edit"]["safetensors_base64"], ex.lm)',
            "with applied(ex.lm, edit):",
        ]
        body = lines[at + 4:]
        lines[at + 4:] = ["    " + line for line in body[:-1]] + [body[-1]]
    return "\n".join(lines) + "\n"
