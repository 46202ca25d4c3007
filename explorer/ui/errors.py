"""User-error wrapping in one place: every handler's failure becomes one clear sentence.

An :class:`~explorer.core.errors.ExplorerError` carries a message written for users and is shown
HTML-escaped; anything else is logged on the server and shown as a short generic sentence, so no raw
Python or Gradio text reaches the page. ``inline`` shows the sentence in the page, in the message line
beside the action that failed (nothing is raised, so no output is marked with an error badge);
``friendly`` raises it as a notice that stays until it is closed.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from explorer.core.errors import ExplorerError

log = logging.getLogger("explorer.ui")


def user_error(e: BaseException) -> gr.Error:
    """A clear message for the user; internal details only in the server log."""
    if isinstance(e, gr.Error):
        return e
    return gr.Error(html.escape(message_of(e), quote=False), duration=None)


GENERIC = "Something went wrong on the server; nothing was changed, please try again."


def message_of(e: BaseException) -> str:
    """The sentence a user sees for ``e`` (plain text)."""
    if isinstance(e, ExplorerError):
        return str(e)  # written for users; may quote what they typed (escape it where it is shown)
    if isinstance(e, gr.Error):
        return str(getattr(e, "message", e))
    log.exception("handler failed", exc_info=e)
    return GENERIC


def message_html(text: str) -> str:
    """An error sentence as a visible alert in a message line (escaped)."""
    return f"<span class='sx-error' role='alert'>⚠ {html.escape(text, quote=False)}</span>"


def inline(fn: Callable, n_outputs: int, at: int) -> Callable:
    """Wrap a handler (a function or a generator) with ``n_outputs`` outputs so that a failure shows its
    sentence in output ``at`` (a message line beside the action) and leaves every other output as it is."""
    def failed(e: BaseException):
        out: list[Any] = [gr.skip()] * n_outputs
        out[at] = message_html(message_of(e))
        return out[0] if n_outputs == 1 else tuple(out)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                yield failed(e)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            return failed(e)
    return wrapper


def friendly(fn: Callable) -> Callable:
    """Wrap a Gradio handler (a function or a generator) so its failures reach the user as ``user_error``."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise user_error(e) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise user_error(e) from None
    return wrapper
