"""Sharing: a whole session as JSON with provenance, and "copy as Python" for the current view.

The export holds everything needed to see the same thing again: model, prompt, chat wrapping,
interpretation settings, every result, and the control edit (its metadata, and its tensors as
base64-encoded safetensors bytes: no pickle). Import restores identical results without
recomputing them, and the edit with them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from explorer.core.errors import InputError
from explorer.core.results import InterpretationSet, public_provenance
from explorer.core.version import __version__

FORMAT = "selfie-explorer-session/1"
EXTRA_KEYS = ("gallery",)  # optional top-level keys kept through import and export


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
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as e:
        raise InputError("That file is not JSON.") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"That file is not a SelfIE Explorer session ({FORMAT}).")
    for key in ("model", "prompt"):
        if not isinstance(data.get(key), str):
            raise InputError(f"The session file has no '{key}'.")
    results = InterpretationSet.from_json(json.dumps({"provenance": data.get("provenance", {}),
                                                      "results": data.get("results", [])}))
    results.prompt = data["prompt"]
    return SessionSnapshot(model=data["model"], prompt=data["prompt"], chat=bool(data.get("chat")),
                           settings=dict(data.get("settings") or {}), results=results, edit=data.get("edit"),
                           provenance=dict(data.get("provenance") or {}),
                           extra={k: v for k, v in data.items() if k in EXTRA_KEYS})


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
