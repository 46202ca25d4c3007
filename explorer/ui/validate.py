"""Validators for every value a handler receives: a browser sends what its widgets hold, but an API
client may send anything (None, "", "abc", NaN, Infinity, 1e30, a megabyte of text, a path).

Each validator returns a clean Python value or raises :class:`InputError` with one sentence naming
the field and what it accepts; the sentence never repeats the raw value (it may be huge or
hostile) and never names a server path.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from explorer.core.errors import InputError

CHARS_PER_TOKEN = 20  # a prompt longer than max tokens x this is refused before it is tokenised


_EXPORT_FLOOR = [0]  # bytes: the largest session file this server itself can export (see allow_exports_of)


def max_upload_bytes() -> int:
    """The largest upload a handler reads: ``SELFIE_MAX_UPLOAD_MB`` when the operator sets it; by default
    8 MB or the largest session file this server exports, whichever is larger, so an exported session
    (with a control edit: one MLP's weights) always imports back through the page."""
    configured = os.environ.get("SELFIE_MAX_UPLOAD_MB")
    if configured is None:
        return max(8 * 2**20, _EXPORT_FLOOR[0])
    try:
        mb = float(configured)
    except ValueError:
        mb = 8.0
    return int(max(0.01, mb) * 2**20)


def allow_exports_of(nbytes: int) -> None:
    """A model was loaded whose session exports (with a control edit: one MLP's weights as base64) can
    reach ``nbytes``: raise the upload limit to take them back."""
    _EXPORT_FLOOR[0] = max(_EXPORT_FLOOR[0], int(nbytes))


def _number(name: str, value: Any, kind: str) -> float:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"The {name} is missing: give {kind}.")
    if not isinstance(value, (int, float, str)):
        raise InputError(f"The {name} must be {kind}.")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"The {name} must be {kind}.") from None
    if not math.isfinite(f):
        raise InputError(f"The {name} must be a finite number, not NaN or infinity.")
    return f


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" of at least {lo:g}"
    if hi is not None:
        return f" of at most {hi:g}"
    return ""


def as_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """A whole number in ``[lo, hi]``: rejects None, "", text, booleans, NaN, infinities and fractions."""
    kind = "a whole number" + _range_text(lo, hi)
    f = _number(name, value, kind)
    if f != int(f):
        raise InputError(f"The {name} must be {kind}.")
    i = int(f)
    if (lo is not None and i < lo) or (hi is not None and i > hi):
        raise InputError(f"The {name} must be {kind}.")
    return i


def as_float(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """A finite number in ``[lo, hi]``."""
    kind = "a number" + _range_text(lo, hi)
    f = _number(name, value, kind)
    if (lo is not None and f < lo) or (hi is not None and f > hi):
        raise InputError(f"The {name} must be {kind}.")
    return f


def as_text(name: str, value: Any, max_chars: int, *, required: bool = False) -> str:
    """A string of at most ``max_chars`` characters (None counts as empty)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"The {name} must be text.")
    if len(value) > max_chars:
        raise InputError(f"Too much text for the {name}: at most {max_chars} characters, got {len(value)}.")
    if required and not value.strip():
        raise InputError(f"The {name} cannot be empty.")
    return value


def as_prompt(value: Any, max_tokens: int, name: str = "prompt") -> str:
    """A prompt, refused by its length in characters before any tokenising (max tokens x 20)."""
    return as_text(name, value, max(1, max_tokens) * CHARS_PER_TOKEN, required=True)


def as_choice(name: str, value: Any, choices: list[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"The {name} must be one of: {', '.join(choices)}.")
    return value


def as_bool(name: str, value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"The {name} must be true or false.")
    return value


def upload_path(file: Any, suffixes: tuple[str, ...], max_bytes: int | None = None) -> Path:
    """The path of an uploaded file, checked on disk (kind, suffix, size) before anything reads it."""
    if file is None:
        raise InputError("No file was uploaded.")
    raw = file if isinstance(file, (str, os.PathLike)) else getattr(file, "path", None) or getattr(file, "name", None)
    if isinstance(file, dict):
        raw = file.get("path") or file.get("name")
    if not isinstance(raw, (str, os.PathLike)) or not str(raw):
        raise InputError("The upload is not a file.")
    path = Path(raw)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"The file must be a {' or '.join(suffixes)} file.")
    try:
        if not path.is_file():
            raise InputError("The uploaded file is missing; please upload it again.")
        size = path.stat().st_size
    except OSError:
        raise InputError("The uploaded file cannot be read; please upload it again.") from None
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if size > limit:
        discard(path)
        raise InputError(f"The file is too large: this server accepts files up to {limit / 2**20:g} MB.")
    return path


def read_upload_text(file: Any, suffixes: tuple[str, ...], max_bytes: int | None = None) -> str:
    """Check an upload, read it as UTF-8 text and delete the temporary copy."""
    path = upload_path(file, suffixes, max_bytes)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("The file is not UTF-8 text.") from None
    except OSError:
        raise InputError("The uploaded file cannot be read; please upload it again.") from None
    finally:
        discard(path)


def discard(path: Path) -> None:
    """Delete an uploaded file once it has been read (Gradio would otherwise keep it)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
