"""Context-dispatched forward hooks on stock Hugging Face modules, safe under concurrent users.

Gradio runs handlers in worker threads over one shared model, so a hook registered on a shared
module sees every thread's forward passes. Each module therefore gets exactly one pre-hook and one
forward hook, installed the first time any context needs that module and never removed; they look
up what to do in a ``ContextVar`` holding the calling context's own functions. Entering
``edit_input`` / ``edit_output`` / ``record`` / ``inject`` only sets that ContextVar, so no request
adds or removes hooks on a shared module, another thread's passes are left untouched, and nothing
can be left behind when a context fails.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

# Per context: module -> ((kind, fn), ...) in the order the contexts were entered (outer first).
# kind "pre": fn(hidden) -> hidden (input); kind "post": fn(output, args) -> output;
# kind "call": fn(args, kwargs), told the call's arguments, changes nothing.
_Entries = tuple[tuple[str, Callable], ...]
_ACTIVE: ContextVar[Mapping[nn.Module, _Entries]] = ContextVar("explorer_active_hooks", default=MappingProxyType({}))
# Which model this context's forward passes run: None = the stock weights; otherwise the tags of every
# hook context that changes what the model computes (a control edit, a steering vector, ...), joined
# by "+". The interpretation cache, the prompt states and the shared batcher key on it, so one
# session's modified model never serves or shares a batch with another's.
MODEL_VARIANT: ContextVar[str | None] = ContextVar("explorer_model_variant", default=None)

_INSTALLED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
_INSTALL_LOCK = threading.Lock()


def _split_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def _join_input(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    return (hidden, *args[1:]), kwargs


def output_tensor(output) -> torch.Tensor:
    """Blocks return a tensor or a tuple whose first item is the hidden states."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_output(output, hidden: torch.Tensor):
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden


def _dispatch_pre(module: nn.Module, args: tuple, kwargs: dict):
    entries = _ACTIVE.get().get(module)
    if not entries:
        return None
    changed = False
    for kind, fn in entries:
        if kind == "pre":
            args, kwargs = _join_input(args, kwargs, fn(_split_input(args, kwargs)))
            changed = True
        elif kind == "call":
            fn(args, kwargs)
    return (args, kwargs) if changed else None


def _dispatch_post(module: nn.Module, args: tuple, output):
    entries = _ACTIVE.get().get(module)
    if not entries:
        return None
    changed = False
    for kind, fn in entries:
        if kind == "post":
            output = _replace_output(output, fn(output_tensor(output), args))
            changed = True
    return output if changed else None


@dataclass(frozen=True)
class VariantScope:
    """The model variant a context runs, as a value: its active hook functions and its tag.

    Shared work (a batch holding several users' rows of one variant) must not run inside any one
    user's context, which also holds that user's stop test and other per-request state. It runs in a
    neutral context instead, with only the variant applied from this value (:meth:`applied`).
    """

    active: Mapping[nn.Module, _Entries]
    variant: str | None

    @classmethod
    def capture(cls) -> VariantScope:
        """The calling context's variant."""
        return cls(_ACTIVE.get(), MODEL_VARIANT.get())

    @contextlib.contextmanager
    def applied(self) -> Iterator[str | None]:
        """Run this variant's hooks (and only them) in the calling context until the block ends."""
        for module in self.active:
            install(module)
        reset_active, reset_variant = _ACTIVE.set(self.active), MODEL_VARIANT.set(self.variant)
        try:
            yield self.variant
        finally:
            MODEL_VARIANT.reset(reset_variant)
            _ACTIVE.reset(reset_active)


def install(module: nn.Module) -> None:
    """Give ``module`` its two dispatching hooks (once; idempotent and thread-safe)."""
    if module in _INSTALLED:
        return
    with _INSTALL_LOCK:
        if module in _INSTALLED:
            return
        # a deep copy of a model carries its modules' dispatchers along: never add a second pair
        if not any(h is _dispatch_pre for h in module._forward_pre_hooks.values()):
            module.register_forward_pre_hook(_dispatch_pre, with_kwargs=True)
        if not any(h is _dispatch_post for h in module._forward_hooks.values()):
            module.register_forward_hook(_dispatch_post)
        _INSTALLED[module] = True


def installed(module: nn.Module) -> bool:
    return module in _INSTALLED


@contextlib.contextmanager
def _activate(pairs: Sequence[tuple[nn.Module, str, Callable]]) -> Iterator[None]:
    """Add ``(module, kind, fn)`` entries to this context's active functions until the block ends."""
    for module, _kind, _fn in pairs:
        install(module)
    current = _ACTIVE.get()
    new = dict(current)
    for module, kind, fn in pairs:
        new[module] = (*new.get(module, ()), (kind, fn))
    reset = _ACTIVE.set(MappingProxyType(new))
    try:
        yield
    finally:
        _ACTIVE.reset(reset)


@contextlib.contextmanager
def model_variant(tag: str | None) -> Iterator[str | None]:
    """Declare that this context runs a modified model named ``tag`` (None: no change).

    The tag is appended to :data:`MODEL_VARIANT` for the context, so nested modifications (an edit,
    then a steering vector) make a variant distinct from either alone.
    """
    if tag is None:
        yield MODEL_VARIANT.get()
        return
    current = MODEL_VARIANT.get()
    combined = tag if current is None else f"{current}+{tag}"
    reset = MODEL_VARIANT.set(combined)
    try:
        yield combined
    finally:
        MODEL_VARIANT.reset(reset)


@contextlib.contextmanager
def edit_input(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], *, variant: str | None) -> Iterator[None]:
    """Replace the hidden-state input of ``module`` by ``fn(input)`` for this context's passes.

    ``variant`` names the model this makes (see :func:`model_variant`); None only for a hook that is
    part of a reading itself (a SelfIE or Patchscope injection), whose results are keyed otherwise.
    """
    with model_variant(variant), _activate([(module, "pre", fn)]):
        yield


@contextlib.contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor, tuple], torch.Tensor], *,
                variant: str | None) -> Iterator[None]:
    """Replace the output of ``module`` by ``fn(output, inputs)`` for this context's passes (``variant``: as
    :func:`edit_input`)."""
    with model_variant(variant), _activate([(module, "post", fn)]):
        yield


@contextlib.contextmanager
def record(modules: Sequence[nn.Module], *, inputs: bool = False) -> Iterator[list[list[torch.Tensor]]]:
    """Record each module's output (or hidden-state input) on this context's passes.

    Yields one list per module, appended to on every forward pass.
    """
    store: list[list[torch.Tensor]] = [[] for _ in modules]
    pairs: list[tuple[nn.Module, str, Callable]] = []
    for i, module in enumerate(modules):
        if inputs:
            def pre(hidden: torch.Tensor, i: int = i) -> torch.Tensor:
                store[i].append(hidden)
                return hidden
            pairs.append((module, "pre", pre))
        else:
            def post(out: torch.Tensor, _args: tuple, i: int = i) -> torch.Tensor:
                store[i].append(out)
                return out
            pairs.append((module, "post", post))
    with _activate(pairs):
        yield store


@contextlib.contextmanager
def record_calls(modules: Sequence[nn.Module]) -> Iterator[list[list[tuple[tuple, dict]]]]:
    """Record the positional and keyword arguments of each module's calls on this context's passes.

    Yields one list per module, appended to on every call. With :func:`replay` a method can run a
    module again on other hidden states with exactly the arguments the model gave it (attention
    mask, rotary position embeddings, ...), e.g. to run the blocks from layer L on.
    """
    store: list[list[tuple[tuple, dict]]] = [[] for _ in modules]
    pairs: list[tuple[nn.Module, str, Callable]] = []
    for i, module in enumerate(modules):
        def call(args: tuple, kwargs: dict, i: int = i) -> None:
            store[i].append((args, dict(kwargs)))
        pairs.append((module, "call", call))
    with _activate(pairs):
        yield store


def replay(module: nn.Module, call: tuple[tuple, dict], hidden: torch.Tensor) -> torch.Tensor:
    """Call ``module`` with the arguments of a recorded call (:func:`record_calls`), its hidden-state
    input replaced by ``hidden`` (moved to the recorded input's device); returns its hidden-state output.

    The batch of ``hidden`` may differ from the recorded one where the other arguments broadcast
    (a call recorded with batch 1). The module's own dispatching hooks run as in any forward pass.
    """
    args, kwargs = call
    recorded = _split_input(args, kwargs)
    args, kwargs = _join_input(args, kwargs, hidden.to(recorded.device, recorded.dtype))
    return output_tensor(module(*args, **kwargs))


def overwrite_positions(
    hidden: torch.Tensor, positions: Sequence[int], vectors: torch.Tensor, strength: float = 1.0
) -> torch.Tensor:
    """``hidden[b, p] <- s * vectors[b] + (1 - s) * hidden[b, p]`` for every p in ``positions``.

    ``hidden``: (B, S, d); ``vectors``: (B, d) or (d,). With s = 1 the rows are replaced exactly;
    every other position is returned bit-identical.
    """
    if not positions:
        return hidden
    out = hidden.clone()
    vec = vectors.to(device=hidden.device, dtype=hidden.dtype)
    if vec.dim() == 1:
        vec = vec.expand(hidden.shape[0], -1)
    idx = torch.as_tensor(list(positions), device=hidden.device)
    new = vec[:, None, :].expand(-1, len(positions), -1)
    if strength != 1.0:
        new = strength * new + (1.0 - strength) * hidden[:, idx, :]
    out[:, idx, :] = new
    return out


@contextlib.contextmanager
def inject(block: nn.Module, positions: Sequence[int], vectors: torch.Tensor, strength: float = 1.0) -> Iterator[None]:
    """SelfIE injection: overwrite the input of ``block`` at ``positions`` with one vector per row."""
    with edit_input(block, lambda h: overwrite_positions(h, positions, vectors, strength), variant=None):
        yield

