"""Pure model computations for Hugging Face ZeroGPU, and the wiring that routes the app through them.

On ZeroGPU, ``spaces.GPU`` runs a function in a forked worker and pickles its arguments and its
result: whatever the function changes stays in the worker, and objects holding locks, events or
open files cannot cross. So only three pure computations run there, each taking and returning
plain tensors, lists, dicts and frozen settings:

- :func:`capture_states`: token ids -> every layer's states (the grid),
- :func:`generate_ids`: states -> the SelfIE reading's token ids and their probabilities,
- :func:`score_without`: generated ids -> their probabilities without the state (relevancy).

The session's model state (control edit and concept steering) travels as a picklable payload
(:meth:`ModelState.payload`), found by the variant tag the call runs under; a variant this
process does not know fails the call rather than computing it with the stock model. Sessions,
grids and results are built and changed only in the main process, from what these return.
Outside ZeroGPU (``SPACES_ZERO_GPU`` unset) nothing is rerouted and :func:`on_gpu` is a no-op.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from explorer.core.errors import InputError
from explorer.core.grid import Grid, capture_ids, decode_tokens, tokenize_prompt
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel, load_model
from explorer.interpret.decode import GeneratedBatch
from explorer.interpret.engine import Interpreter, InterpretSettings
from explorer.methods.model_state import ModelState

_MODELS: dict[str, LoadedModel] = {}  # filled in the main process; a forked worker inherits it
_INTERPRETERS: dict[str, Interpreter] = {}
_STATES: OrderedDict[str, ModelState] = OrderedDict()  # variant tag -> the state that makes it
_STATES_LOCK = threading.Lock()
_STATES_SIZE = 512

StatePayload = dict  # ModelState.payload(): {"edit": {...} | None, "steering": Steering | None}
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


def remember_state(variant: str | None, state: ModelState) -> None:
    """Remember which model state makes ``variant``, so work running under that variant (a shared
    batch, in a neutral context) can send the state along to the GPU worker."""
    if variant is None:
        return
    with _STATES_LOCK:
        _STATES[variant] = state
        _STATES.move_to_end(variant)
        while len(_STATES) > _STATES_SIZE:
            _STATES.popitem(last=False)


def state_payload(state: ModelState | None) -> StatePayload | None:
    """A picklable copy of a model state (None and the stock model: None)."""
    return None if state is None or state.is_stock else state.payload()


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


def _edited(lm: LoadedModel, payload: StatePayload | None):
    return ModelState.from_payload(payload).applied(lm)


def capture_states(spec: str, ids: list[int], edit: StatePayload | None = None) -> torch.Tensor:
    """Token ids -> (n_layers + 1, T, d) float32 CPU states of every layer (row 0 = embeddings)."""
    lm = _model(spec)
    with _edited(lm, edit):
        return capture_ids(lm, list(ids)).hidden.contiguous()


def generate_ids(spec: str, vectors: torch.Tensor, settings: InterpretSettings,
                 edit: StatePayload | None = None) -> tuple[list[list[int]], list[list[float]], int]:
    """States (B, d) -> the greedy SelfIE readings: (ids per row, p(y_j | with state) per row, steps)."""
    it = _interpreter(spec)
    with _edited(it.lm, edit):
        gen = it.generate_now(vectors.to(torch.float32), settings)
    return [list(map(int, r)) for r in gen.ids], [list(map(float, r)) for r in gen.p_with], int(gen.steps)


def score_without(spec: str, generated: list[list[int]], settings: InterpretSettings,
                  edit: StatePayload | None = None) -> list[list[float]]:
    """Generated ids -> p(y_j | the template with its placeholders unpatched), per row."""
    it = _interpreter(spec)
    with _edited(it.lm, edit):
        return [list(map(float, r)) for r in it.p_without(generated, settings)]


_capture_gpu = on_gpu(capture_states)
_generate_gpu = on_gpu(generate_ids)
_score_gpu = on_gpu(score_without)


def _fresh(fn: Callable, *args):
    """``fn(*args)`` in an empty context, as in the GPU worker: the model state comes from the payload alone
    (never also from hooks the calling context has active)."""
    return contextvars.Context().run(fn, *args)


def _current_edit() -> StatePayload | None:
    """The payload of the model state the calling context runs (None: the stock model)."""
    variant = MODEL_VARIANT.get()
    if variant is None:
        return None
    with _STATES_LOCK:
        state = _STATES.get(variant)
    if state is None:
        raise InputError("This reading's model variant is no longer known to the server; apply your edit or "
                         "steering again.")
    return state_payload(state)


def route_through_gpu(ex: Any, spec: str) -> None:
    """Send an Explorer's grid capture and its interpreter's two model calls through the GPU functions.

    Tokenising, building the grid and every session change stay in this (the main) process.
    """
    lm, it = ex.lm, ex.interpreter
    register(spec, lm)

    def run(prompt: str, *, chat: bool = False) -> Grid:
        ids = tokenize_prompt(lm, prompt, chat=chat, max_tokens=ex.max_prompt_tokens)
        hidden = _fresh(_capture_gpu, spec, ids, _current_edit())
        texts, special = decode_tokens(lm.tokenizer, ids)
        prov = lm.provenance() | {"chat_wrapped": chat, "edit_id": MODEL_VARIANT.get()}
        return Grid(prompt=prompt, token_ids=ids, tokens=texts, special=special, hidden=hidden, provenance=prov,
                    chat=chat)

    def generate_now(vectors: torch.Tensor, settings: InterpretSettings, on_step=None, keep=None) -> GeneratedBatch:
        ids, p_with, steps = _fresh(_generate_gpu, spec, vectors.detach().to("cpu"), settings, _current_edit())
        if on_step is not None:
            on_step(steps, ids)  # one snapshot: the worker cannot stream steps back
        # The worker cannot be asked per step: rows no longer wanted are dropped once it is done.
        dropped = frozenset(i for i in range(len(ids)) if keep is not None and not keep([i])[0])
        return GeneratedBatch(ids=ids, p_with=p_with, steps=steps, dropped=dropped)

    def p_without(generated, settings: InterpretSettings, max_nodes: int = 512) -> list[list[float]]:
        return _fresh(_score_gpu, spec, [list(g) for g in generated], settings, _current_edit())

    ex.run = run
    it.generate_now = generate_now
    it.p_without = p_without
