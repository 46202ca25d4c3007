"""Files named by a user, read with one clear sentence for every way they can be wrong.

A path that is missing, a folder, unreadable, not UTF-8 text or JSON nested too deeply for
Python's parser each gets its own :class:`InputError` sentence, so commands and the app never
show ``UnicodeDecodeError``, ``IsADirectoryError`` or ``RecursionError`` to a user.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from explorer.core.errors import InputError

ECHO_CHARS = 60  # at most this much of a user's own text is repeated in a message


def shorten(text: object, limit: int = ECHO_CHARS) -> str:
    """``text`` as it may be echoed in a message: at most ``limit`` characters, cut with an ellipsis."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def readable_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it names a file this process can read; else InputError saying what it is instead."""
    p = Path(path).expanduser()
    name = shorten(str(path), 200)
    if p.is_dir():
        raise InputError(f"The {what} '{name}' is a folder, not a file.")
    if not p.exists():
        raise InputError(f"The {what} '{name}' does not exist.")
    if not p.is_file():
        raise InputError(f"The {what} '{name}' is not a regular file.")
    if not os.access(p, os.R_OK):
        raise InputError(f"The {what} '{name}' cannot be read (permission denied).")
    return p


def not_text(path: str | os.PathLike, what: str, e: UnicodeDecodeError) -> InputError:
    """The sentence for a file that is not UTF-8 text (random bytes, a binary file, another encoding)."""
    return InputError(f"The {what} '{shorten(str(path), 200)}' is not UTF-8 text (byte {e.start + 1} cannot be "
                      "decoded); save it as UTF-8.")


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The whole file as UTF-8 text; InputError for anything that is not a readable text file."""
    p = readable_file(path, what)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise not_text(path, what, e) from None
    except OSError as e:
        raise InputError(f"The {what} '{shorten(str(path), 200)}' cannot be read "
                         f"({e.strerror or 'input/output error'}).") from None


def loads_json(text: str | bytes, what: str = "The file") -> Any:
    """``json.loads`` whose failures are one sentence starting with ``what`` ("The file", "Line 3")."""
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{what} is JSON nested too deeply to read (arrays or objects inside each other "
                         "thousands of times).") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{what} is not UTF-8 text (byte {e.start + 1} cannot be decoded).") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
    except (TypeError, ValueError):
        raise InputError(f"{what} is not valid JSON.") from None
