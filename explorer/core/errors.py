"""Typed exceptions: every user-facing failure is one of these, with a one-sentence message."""

from __future__ import annotations


class ExplorerError(Exception):
    """Base of all errors the explorer raises on purpose (the message is meant for users)."""


class InputError(ExplorerError, ValueError):
    """A user-supplied value (prompt, template, cell, setting) is invalid."""


class ModelLoadError(ExplorerError, RuntimeError):
    """A model could not be loaded; the message says which, why, and what to do."""


class EditError(ExplorerError, ValueError):
    """A control edit could not be made, loaded or applied."""
