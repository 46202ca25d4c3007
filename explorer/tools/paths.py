"""Output paths checked before a command works for minutes and then fails to write its result.

``os.access`` alone is not enough: it says yes to root for ``/proc`` and for read-only mounts, so
both checks also create (and remove) a file where the output will go.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from explorer.core.errors import InputError
from explorer.core.files import shorten


def writable_file(path: str | os.PathLike | None, what: str = "--out", *, make_folder: bool = False) -> Path | None:
    """``path`` if a file can be written there (its folder exists and is writable), else InputError.

    ``make_folder``: create the folder first, for commands that write into a folder of their own.
    """
    if not path:
        return None
    p = Path(path).expanduser()
    shown = shorten(str(path), 200)
    parent = p.parent if str(p.parent) else Path(".")
    if make_folder and not parent.exists():
        writable_dir(parent, what)
    if p.is_dir():
        raise InputError(f"{what} names a folder, not a file: {shown}.")
    if not parent.is_dir():
        if parent.exists():
            raise InputError(f"{what}: {shorten(str(parent), 200)} is a file, not a folder, so {shown} cannot be "
                             "written.")
        raise InputError(f"{what}: the folder {shorten(str(parent), 200)} does not exist.")
    if p.exists():  # a file to overwrite, or a device such as /dev/null
        if not os.access(p, os.W_OK):
            raise InputError(f"{what}: {shown} cannot be written (permission denied).")
        return p
    try:  # a trial file, removed at once: the only test that /proc and read-only mounts answer truly
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # made by another process meanwhile (never removed here: it is not ours)
        if not os.access(p, os.W_OK):
            raise InputError(f"{what}: {shown} cannot be written (permission denied).") from None
        return p
    except OSError as e:
        raise InputError(f"{what}: {shown} cannot be written ({_reason(e)}).") from None
    os.close(fd)
    p.unlink(missing_ok=True)
    return p


def writable_dir(path: str | os.PathLike, what: str = "--out-dir") -> Path:
    """A folder to write into, created if missing; InputError if that is impossible."""
    p = Path(path).expanduser()
    shown = shorten(str(path), 200)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} must be a folder, and {shown} is an existing file: give a folder name.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what}: the folder {shown} cannot be created ({_reason(e)}).") from None
    try:
        with tempfile.TemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{what}: {shown} cannot be written ({_reason(e)}).") from None
    return p


def _reason(e: OSError) -> str:
    return (e.strerror or "not allowed").lower()
