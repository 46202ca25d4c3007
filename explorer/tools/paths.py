"""Output paths checked before a command works for minutes and then fails to write its result."""

from __future__ import annotations

import os
from pathlib import Path

from explorer.core.errors import InputError


def writable_file(path: str | None, what: str = "--out") -> Path | None:
    """``path`` if a file can be written there (its folder exists and is writable), else InputError."""
    if not path:
        return None
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{what} names a folder, not a file: {path}.")
    if not parent.is_dir():
        raise InputError(f"{what}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"{what}: {path} cannot be written (permission denied).")
    return p


def writable_dir(path: str, what: str = "--out-dir") -> Path:
    """A folder to write into, created if missing; InputError if that is impossible."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what}: the folder {path} cannot be created ({e.strerror or 'not allowed'}).") from None
    if not os.access(p, os.W_OK):
        raise InputError(f"{what}: {path} cannot be written (permission denied).")
    return p
