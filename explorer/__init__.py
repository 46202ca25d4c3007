"""SelfIE Explorer: read and edit what a language model holds at every layer and token.

The names a user needs are importable from here; heavy modules load on first use, so
``selfie-explorer --help`` stays fast.

    >>> from explorer import Explorer
    >>> ex = Explorer.load()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from explorer.core.errors import EditError, ExplorerError, InputError, ModelLoadError
from explorer.core.version import __version__

_LAZY = {
    "Explorer": "explorer.api",
    "load_model": "explorer.core.models",
    "LoadedModel": "explorer.core.models",
    "Grid": "explorer.core.grid",
    "CellInterpretation": "explorer.core.results",
    "InterpretationSet": "explorer.core.results",
    "Template": "explorer.core.prompts",
    "InterpretSettings": "explorer.interpret.settings",
    "Interpreter": "explorer.interpret.engine",
    "Edit": "explorer.methods.control",
    "TrainSettings": "explorer.methods.control",
    "applied": "explorer.methods.control",
    "supervised_control": "explorer.methods.control",
    "reinforcement_control": "explorer.methods.control",
    "Judge": "explorer.methods.control",
    "steering_vector": "explorer.methods.control",
    "concept_state": "explorer.methods.control",
    "trace": "explorer.methods.tracing",
    "CausalTrace": "explorer.methods.tracing",
    "TraceSettings": "explorer.methods.tracing",
}

__all__ = [
    "CausalTrace", "CellInterpretation", "Edit", "EditError", "Explorer", "ExplorerError", "Grid", "InputError",
    "InterpretSettings", "InterpretationSet", "Interpreter", "Judge", "LoadedModel", "ModelLoadError", "Template",
    "TraceSettings", "TrainSettings", "__version__", "applied", "concept_state", "load_model", "reinforcement_control",
    "steering_vector", "supervised_control", "trace",
]

if TYPE_CHECKING:
    from explorer.api import Explorer
    from explorer.core.grid import Grid
    from explorer.core.models import LoadedModel, load_model
    from explorer.core.prompts import Template
    from explorer.core.results import CellInterpretation, InterpretationSet
    from explorer.interpret.engine import Interpreter
    from explorer.interpret.settings import InterpretSettings
    from explorer.methods.control import (
        Edit,
        Judge,
        TrainSettings,
        applied,
        concept_state,
        reinforcement_control,
        steering_vector,
        supervised_control,
    )
    from explorer.methods.tracing import CausalTrace, TraceSettings, trace


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")
