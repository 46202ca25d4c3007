"""Guards in front of Gradio's API: malformed requests get one clear sentence, never Gradio's text.

* An ASGI middleware (:class:`RequestGuard`): bodies that are not ``{"data": [...]}`` JSON get a
  422 with a sentence; NaN, Infinity and numbers too large for a float are replaced by a marker
  that the input check below answers ("... must be a finite number") instead of letting them reach
  Gradio (which fails with "Out of range float values are not JSON compliant" or OverflowError);
  uploads larger than the server's limit are refused with a 413 before they are stored.
* :func:`install_input_checks`: every event's values are checked against its input components
  (a number where a Number or Slider is, text for a Textbox, a listed choice for a Dropdown, an
  uploaded file for a file input) before Gradio preprocesses them, and anything Gradio's own
  preprocessing still raises ("Could not preprocess input component at index 2...", "Cannot move
  /etc/passwd to the gradio cache dir...") becomes one sentence with no path or exception name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from typing import Any

from explorer.ui.validate import max_upload_bytes

log = logging.getLogger("explorer.ui")

_GUARDED = ("/call/", "/queue/join", "/run/", "/api/")
MAX_BODY = 4 * 2**20
MAX_URL = 8 * 2**10  # path and query string; the app's own links (?session=, ?gallery=) are far shorter
NONFINITE = "\u0000selfie-non-finite-number\u0000"  # what the guard puts where NaN/Infinity was sent
MULTIPART_SLACK = 64 * 2**10


class UploadLedger:
    """Uploads of the last minute, counted per client address and in bytes overall.

    Gradio keeps every uploaded file until its cache is cleaned (the app cleans it every few
    minutes), whether or not a handler ever reads it; without a count, anyone could fill the disk
    with files just under the size limit. Over either limit an upload is refused with a sentence.
    """

    def __init__(self, per_client: int | None = None, window_mb: float | None = None, window_s: float = 60.0):
        self.per_client = per_client if per_client is not None else int(os.environ.get("SELFIE_UPLOADS_PER_MINUTE", "60"))
        mb = window_mb if window_mb is not None else float(os.environ.get("SELFIE_UPLOAD_MB_PER_MINUTE", "512"))
        self.window_bytes = int(mb * 2**20)
        self.window_s = window_s
        self._seen: deque[tuple[float, str, int]] = deque()
        self._lock = threading.Lock()

    def admit(self, client: str, nbytes: int) -> str | None:
        """Record an upload, or return the sentence refusing it."""
        now = time.monotonic()
        with self._lock:
            while self._seen and now - self._seen[0][0] > self.window_s:
                self._seen.popleft()
            if sum(1 for _, c, _ in self._seen if c == client) >= self.per_client:
                return (f"Too many uploads from your address: this server accepts {self.per_client} a minute; "
                        "please wait a moment.")
            if sum(n for _, _, n in self._seen) + nbytes > self.window_bytes:
                return "The server is receiving too many uploads right now; please try again in a minute."
            self._seen.append((now, client, nbytes))
        return None


class RequestGuard:
    def __init__(self, app):
        self.app = app
        self.uploads = UploadLedger()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _url_length(scope) > MAX_URL:
            # Gradio rebuilds the request's URL with httpx, which refuses one over 64 KiB: a page request
            # failed with a bare 500 and a queued job was accepted but never answered.
            await _reject(send, 414, "The address is too long: this server accepts addresses of at most "
                          f"{MAX_URL // 1024} KB.", plain=_wants_page(scope))
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.endswith("/upload"):
            await self._upload(scope, receive, send)
            return
        if not any(g in path for g in _GUARDED):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > max(MAX_BODY, max_upload_bytes() + MULTIPART_SLACK):  # a session file may come as text
                await _reject(send, 413, "The request is too large for this server.")
                return
            chunks.append(body)
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        problem, raw, payload = _check(raw)
        if problem:
            await _reject(send, 422, problem)
            return
        refusal = _endpoint_problem(scope, path, payload)
        if refusal:
            await _reject(send, *refusal)
            return
        await self.app(scope, _replay(raw, receive), send)

    async def _upload(self, scope, receive, send) -> None:
        """Refuse an upload over the limit from its declared length, and stop reading one that lies."""
        limit = max_upload_bytes() + MULTIPART_SLACK
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = (f"The file is too large: this server accepts files up to {max_upload_bytes() / 2**20:g} MB.")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, 413, too_big)
            return
        client = (scope.get("client") or ("?", 0))[0]
        refusal = self.uploads.admit(str(client), int(declared) if declared is not None and declared.isdigit() else 0)
        if refusal is not None:
            await _reject(send, 429, refusal)
            return
        seen = 0
        refused = False

        async def counting():
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit and not refused:
                refused = True
                await _reject(send, 413, too_big)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, counting, guarded_send)


def _replay(raw: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


def _nonfinite_float(text: str) -> Any:
    f = float(text)
    return f if math.isfinite(f) else NONFINITE


def _url_length(scope) -> int:
    path = scope.get("raw_path") or scope.get("path", "").encode()
    return len(path) + len(scope.get("query_string") or b"")


def _wants_page(scope) -> bool:
    """A browser asking for a page (answered in plain text), not an API client (answered in JSON)."""
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    return scope.get("method") == "GET" and b"text/html" in accept


def _blocks(scope):
    """The Gradio app's Blocks, from the ASGI app the request came in through (None if not there)."""
    get_blocks = getattr(scope.get("app"), "get_blocks", None)
    try:
        return get_blocks() if callable(get_blocks) else None
    except Exception:  # an app without Blocks yet
        return None


def _endpoint_problem(scope, path: str, payload: dict) -> tuple[int, str] | None:
    """(status, sentence) for a request naming a function or endpoint this app does not have.

    Gradio looks both up without a check and answers a bare 500 (``KeyError``) for an unknown one.
    """
    blocks = _blocks(scope)
    fns = getattr(blocks, "fns", None)
    fn_index = payload.get("fn_index")
    if fn_index is not None:
        if isinstance(fn_index, bool) or not isinstance(fn_index, int):
            return 422, "The request's 'fn_index' must be a whole number."
        if fn_index < 0 or (isinstance(fns, dict) and fn_index not in fns):
            shown = str(fn_index) if len(str(fn_index)) <= 20 else str(fn_index)[:19] + "…"
            return 404, f"The request's 'fn_index' {shown} names no function of this app."
        return None
    name = _api_name(path)
    if name is not None and isinstance(fns, dict) and name not in {getattr(f, "api_name", None) for f in fns.values()}:
        shown = name if len(name) <= 60 else name[:59] + "…"
        return 404, f"This app has no API endpoint named '{shown}'."
    return None


def _api_name(path: str) -> str | None:
    """The endpoint name of ``.../run/NAME``, ``.../call/NAME`` or ``.../call/v2/NAME`` (None for other paths)."""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts[:-1]):
        if part in ("run", "call", "api") and i + 2 == len(parts):
            return parts[-1]
        if part == "call" and parts[i + 1] == "v2" and i + 3 == len(parts):
            return parts[-1]
    return None


def _check(raw: bytes) -> tuple[str | None, bytes, dict]:
    """(a sentence saying what is wrong, or None; the body to pass on, non-finite numbers marked; the payload)."""
    marked = False

    def constant(_name: str) -> str:
        nonlocal marked
        marked = True
        return NONFINITE

    def number(text: str) -> Any:
        nonlocal marked
        value = _nonfinite_float(text)
        marked = marked or value is NONFINITE
        return value

    try:
        payload = json.loads(raw.decode("utf-8"), parse_constant=constant, parse_float=number)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "The request body is not valid JSON.", raw, {}
    if not isinstance(payload, dict):
        return "The request body must be a JSON object with a 'data' list.", raw, {}
    if "data" in payload and not isinstance(payload["data"], list):
        return "The request's 'data' must be a list.", raw, payload
    if marked:
        raw = json.dumps(payload).encode()
    return None, raw, payload


async def _reject(send, status: int, detail: str, plain: bool = False) -> None:
    body = (detail + "\n").encode() if plain else json.dumps({"error": detail}).encode()
    kind = b"text/plain; charset=utf-8" if plain else b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def app_kwargs() -> dict:
    """Keyword arguments for ``launch(app_kwargs=...)`` installing the guard."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(RequestGuard)]}


def install_input_checks(demo) -> None:
    """Check every event's values against its input components before Gradio preprocesses them."""
    import gradio as gr

    original = demo.preprocess_data

    async def checked(block_fn, inputs, state, explicit_call=False):
        check_inputs(block_fn.inputs, inputs, _parameter_names(block_fn))
        try:
            return await original(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as e:
            log.info("request values refused by preprocessing: %s", type(e).__name__)
            raise gr.Error(_preprocess_sentence(e)) from None

    demo.preprocess_data = checked


def _preprocess_sentence(e: Exception) -> str:
    if type(e).__name__ == "InvalidPathError" or "gradio cache" in str(e):
        return "Files must be uploaded to this server first; a path on the server is not accepted."
    return "One of the request's values has the wrong type or form for this endpoint."


def _parameter_names(block_fn) -> list[str]:
    """The handler's parameter names, which name the inputs of hidden API endpoints (no labels)."""
    import inspect

    try:
        params = list(inspect.signature(block_fn.fn).parameters.values())
    except (TypeError, ValueError):
        return []
    return [p.name.replace("_", " ") for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _label(block, i: int, names: list[str]) -> str:
    label = getattr(block, "label", None)
    if isinstance(label, str) and label:
        return f"'{label}'"
    return f"'{names[i]}'" if i < len(names) else f"input {i + 1}"


def _has_marker(value: Any, depth: int = 0) -> bool:
    if value == NONFINITE:
        return True
    if depth > 20:
        return False
    if isinstance(value, list):
        return any(_has_marker(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_marker(v, depth + 1) for v in value.values())
    return False


def check_inputs(blocks: list, inputs: list, names: list[str] | None = None) -> None:
    """Raise ``gr.Error`` with one sentence for the first value that does not fit its component."""
    import gradio as gr

    if len(inputs) < len(blocks):
        raise gr.Error(f"This endpoint expects {len(blocks)} values; the request sent {len(inputs)}.")
    for i, block in enumerate(blocks):
        if isinstance(block, gr.State):
            continue
        problem = _value_problem(block, inputs[i])
        if problem:
            raise gr.Error(f"The value for {_label(block, i, names or [])} {problem}.")


def _value_problem(block, value: Any) -> str | None:
    import gradio as gr

    if _has_marker(value):
        return "must be a finite number, not NaN or infinity"
    if value is None:
        return None
    if isinstance(block, (gr.Number, gr.Slider)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
    elif isinstance(block, (gr.Textbox, gr.Code)):
        if not isinstance(value, str):
            return "must be text"
    elif isinstance(block, gr.Checkbox):
        if not isinstance(value, bool):
            return "must be true or false"
    elif isinstance(block, (gr.Dropdown, gr.Radio)):
        return _choice_problem(block, value)
    elif isinstance(block, (gr.File, gr.UploadButton)) and not _uploaded(value):
        return "must be a file uploaded to this server"
    return None


def _uploaded(value: Any) -> bool:
    """Whether ``value`` names a file inside Gradio's upload folder (not any path on the server)."""
    from pathlib import Path

    from gradio.utils import get_upload_folder

    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        return False
    try:
        return Path(value["path"]).resolve().is_relative_to(Path(get_upload_folder()).resolve())
    except (OSError, ValueError):
        return False


def _choice_problem(block, value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be text"
    choices = [c[1] if isinstance(c, (list, tuple)) else c for c in (block.choices or [])]
    if not getattr(block, "allow_custom_value", False) and value not in choices:
        return "must be one of the offered choices"
    return None
