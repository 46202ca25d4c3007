"""Context-managed forward hooks on stock Hugging Face modules, safe under concurrent users.

Gradio runs handlers in worker threads over one shared model, so a hook registered on a shared
module sees every thread's forward passes. Each hook here therefore acts only when its own token is
in the calling context's ``_ACTIVE`` set (a ``ContextVar``): another thread's passes through the
same module are left untouched. Hooks are removed in a ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

import torch
from torch import nn

_ACTIVE: ContextVar[frozenset[int]] = ContextVar("explorer_active_hooks", default=frozenset())
# Which model this context's forward passes run: None = the stock weights; otherwise the tags of every
# hook context that changes what the model computes (a control edit, a steering vector, ...), joined
# by "+". The interpretation cache and the shared batcher key on it, so one session's modified model
# never serves or shares a batch with another's.
MODEL_VARIANT: ContextVar[str | None] = ContextVar("explorer_model_variant", default=None)
_counter = iter(range(1, 1 << 62))


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


@contextlib.contextmanager
def _active(token: int, handles: Sequence[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Switch the hooks behind ``token`` on for this context, and remove them when it ends."""
    reset = _ACTIVE.set(_ACTIVE.get() | {token})
    try:
        yield
    finally:
        _ACTIVE.reset(reset)
        for h in handles:
            h.remove()


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
    token = next(_counter)

    def hook(_mod, args, kwargs):
        if token not in _ACTIVE.get():
            return None
        return _join_input(args, kwargs, fn(_split_input(args, kwargs)))

    with model_variant(variant), _active(token, [module.register_forward_pre_hook(hook, with_kwargs=True)]):
        yield


@contextlib.contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor, tuple], torch.Tensor], *,
                variant: str | None) -> Iterator[None]:
    """Replace the output of ``module`` by ``fn(output, inputs)`` for this context's passes (``variant``: as
    :func:`edit_input`)."""
    token = next(_counter)

    def hook(_mod, args, output):
        if token not in _ACTIVE.get():
            return None
        return _replace_output(output, fn(output_tensor(output), args))

    with model_variant(variant), _active(token, [module.register_forward_hook(hook)]):
        yield


@contextlib.contextmanager
def record(modules: Sequence[nn.Module], *, inputs: bool = False) -> Iterator[list[list[torch.Tensor]]]:
    """Record each module's output (or hidden-state input) on this context's passes.

    Yields one list per module, appended to on every forward pass.
    """
    token = next(_counter)
    store: list[list[torch.Tensor]] = [[] for _ in modules]
    handles = []
    for i, module in enumerate(modules):
        if inputs:
            def pre(_mod, args, kwargs, i=i):
                if token in _ACTIVE.get():
                    store[i].append(_split_input(args, kwargs))
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(_mod, _args, output, i=i):
                if token in _ACTIVE.get():
                    store[i].append(output_tensor(output))
            handles.append(module.register_forward_hook(post))
    with _active(token, handles):
        yield store


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

