"""User-error wrapping in one place: every handler's failure becomes one clear sentence.

An :class:`~explorer.core.errors.ExplorerError` carries a message written for users and is shown
HTML-escaped (the toast renders HTML); anything else is logged on the server and shown as a short
generic sentence, so no raw Python or Gradio text reaches the page.
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
    if isinstance(e, ExplorerError):
        # the toast renders HTML, and messages may quote what the user typed (or a crafted file held)
        return gr.Error(html.escape(str(e), quote=False))
    log.exception("handler failed", exc_info=e)
    return gr.Error("Something went wrong on the server; nothing was changed, please try again.")


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
