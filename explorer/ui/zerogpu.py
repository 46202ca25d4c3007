"""Pure model computations for Hugging Face ZeroGPU, and the wiring that routes the app through them.

On ZeroGPU, ``spaces.GPU`` runs a function in a forked worker and pickles its arguments and its
result: whatever the function changes stays in the worker, and objects holding locks, events or
open files cannot cross. So only three pure computations run there, each taking and returning
plain tensors, lists, dicts and frozen settings:

- :func:`capture_states`: token ids -> every layer's states (the grid),
- :func:`generate_ids`: states -> the SelfIE reading's token ids and their probabilities,
- :func:`score_without`: generated ids -> their probabilities without the state (relevancy).

A control edit travels as :func:`edit_payload` (its layer, CPU tensors and metadata). Sessions,
grids and results are built and changed only in the main process, from what these return.
Outside ZeroGPU (``SPACES_ZERO_GPU`` unset) nothing is rerouted and :func:`on_gpu` is a no-op.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import torch

from explorer.core.grid import Grid, capture_ids, decode_tokens, tokenize_prompt
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel, load_model
from explorer.interpret.decode import GeneratedBatch
from explorer.interpret.engine import Interpreter, InterpretSettings

_MODELS: dict[str, LoadedModel] = {}  # filled in the main process; a forked worker inherits it
_INTERPRETERS: dict[str, Interpreter] = {}
_EDITS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # edit id -> Edit, for the payload

EditPayload = dict  # {"layer": int, "params": {name: CPU tensor}, "meta": dict}
_MAIN_PID = os.getpid()


def _fork_safe() -> None:
    """In a forked worker, CPU ops must not enter the parent's OpenMP pool (it does not survive a fork
    and the child would hang): use one thread there. The GPU does the heavy work on ZeroGPU anyway."""
    if os.getpid() != _MAIN_PID and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def enabled() -> bool:
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def on_gpu(fn: Callable, duration: int = 120) -> Callable:
    """``fn`` through ``spaces.GPU`` on a ZeroGPU Space, ``fn`` itself everywhere else."""
    if enabled():
        try:
            import spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=duration)(fn)
    return fn


def register(spec: str, lm: LoadedModel) -> None:
    """Make a loaded model known under ``spec`` (before a worker forks, so the worker has it too)."""
    _MODELS[spec] = lm


def remember_edit(edit: Any) -> None:
    """Keep a handle on a session's edit by id, so a job running under its variant can send it along."""
    if edit is not None:
        _EDITS[edit.edit_id] = edit


def edit_payload(edit: Any) -> EditPayload | None:
    """A picklable copy of a control edit (None stays None)."""
    if edit is None:
        return None
    return {"layer": int(edit.layer), "params": {k: v.detach().to("cpu") for k, v in edit.params.items()},
            "meta": dict(edit.meta)}


def _model(spec: str) -> LoadedModel:
    _fork_safe()
    lm = _MODELS.get(spec)
    if lm is None:
        lm = _MODELS[spec] = load_model(spec)
    return lm


def _interpreter(spec: str) -> Interpreter:
    _fork_safe()
    it = _INTERPRETERS.get(spec)
    if it is None:
        it = _INTERPRETERS[spec] = Interpreter(_model(spec))
    return it


def _edited(lm: LoadedModel, payload: EditPayload | None):
    from explorer.methods.control import Edit, applied

    edit = None if payload is None else Edit(layer=payload["layer"], params=payload["params"], meta=payload["meta"])
    return applied(lm, edit)


def capture_states(spec: str, ids: list[int], edit: EditPayload | None = None) -> torch.Tensor:
    """Token ids -> (n_layers + 1, T, d) float32 CPU states of every layer (row 0 = embeddings)."""
    lm = _model(spec)
    with _edited(lm, edit):
        return capture_ids(lm, list(ids)).hidden.contiguous()


def generate_ids(spec: str, vectors: torch.Tensor, settings: InterpretSettings,
                 edit: EditPayload | None = None) -> tuple[list[list[int]], list[list[float]], int]:
    """States (B, d) -> the greedy SelfIE readings: (ids per row, p(y_j | with state) per row, steps)."""
    it = _interpreter(spec)
    with _edited(it.lm, edit):
        gen = it.generate_now(vectors.to(torch.float32), settings)
    return [list(map(int, r)) for r in gen.ids], [list(map(float, r)) for r in gen.p_with], int(gen.steps)


def score_without(spec: str, generated: list[list[int]], settings: InterpretSettings,
                  edit: EditPayload | None = None) -> list[list[float]]:
    """Generated ids -> p(y_j | the template with its placeholders unpatched), per row."""
    it = _interpreter(spec)
    with _edited(it.lm, edit):
        return [list(map(float, r)) for r in it.p_without(generated, settings)]


_capture_gpu = on_gpu(capture_states)
_generate_gpu = on_gpu(generate_ids)
_score_gpu = on_gpu(score_without)


def _current_edit() -> EditPayload | None:
    variant = MODEL_VARIANT.get()
    if variant is None:
        return None
    edit = _EDITS.get(variant.split("+", 1)[0])
    return edit_payload(edit)


def route_through_gpu(ex: Any, spec: str) -> None:
    """Send an Explorer's grid capture and its interpreter's two model calls through the GPU functions.

    Tokenising, building the grid and every session change stay in this (the main) process.
    """
    lm, it = ex.lm, ex.interpreter
    register(spec, lm)

    def run(prompt: str, *, chat: bool = False) -> Grid:
        ids = tokenize_prompt(lm, prompt, chat=chat, max_tokens=ex.max_prompt_tokens)
        hidden = _capture_gpu(spec, ids, _current_edit())
        texts, special = decode_tokens(lm.tokenizer, ids)
        prov = lm.provenance() | {"chat_wrapped": chat, "edit_id": MODEL_VARIANT.get()}
        return Grid(prompt=prompt, token_ids=ids, tokens=texts, special=special, hidden=hidden, provenance=prov,
                    chat=chat)

    def generate_now(vectors: torch.Tensor, settings: InterpretSettings, on_step=None) -> GeneratedBatch:
        ids, p_with, steps = _generate_gpu(spec, vectors.detach().to("cpu"), settings, _current_edit())
        if on_step is not None:
            on_step(steps, ids)  # one snapshot: the worker cannot stream steps back
        return GeneratedBatch(ids=ids, p_with=p_with, steps=steps)

    def p_without(generated, settings: InterpretSettings, max_nodes: int = 512) -> list[list[float]]:
        return _score_gpu(spec, [list(g) for g in generated], settings, _current_edit())

    ex.run = run
    it.generate_now = generate_now
    it.p_without = p_without
