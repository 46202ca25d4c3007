"""Control edits: one block's MLP with new weights, applied per context, never in place.

An edit changes the weights of one block's MLP, but never in place: the edited parameters live in
an :class:`Edit`, and ``with applied(lm, edit):`` recomputes that MLP's output with them for the
calling context's forward passes only (a context-gated hook on the stock module). Other users and
threads keep seeing the stock model bit for bit, memory per edit is one MLP's parameters, and
reverting is simply not applying it.

Row L of the grid is the output of block L-1, so an edit "at layer L" trains block L-1's MLP.
This module also holds what every training method shares: the MLP's frozen inputs, the
reference text for the locality term, and the optimiser settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from explorer.core.errors import EditError, InputError
from explorer.core.files import shorten
from explorer.core.grid import capture, tokenize_prompt
from explorer.core.hooks import edit_output, record
from explorer.core.models import LoadedModel, onloaded

REFERENCE_TEXT = [
    "The weather today is mild, with a light breeze in the afternoon.",
    "She opened the book and began to read the first chapter slowly.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The train leaves the station every morning at seven o'clock.",
    "He planted tomatoes and beans in the small garden behind the house.",
]
MAX_STEPS = 500




@dataclass
class Edit:
    """Edited parameters of block ``layer - 1``'s MLP, with provenance and a content hash.

    ``params`` is frozen at construction (a read-only mapping of private, detached tensors) so that
    ``edit_id``, the hash every cache and batch is keyed on, is computed once and stays true.
    """

    layer: int
    params: Mapping[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        frozen = {k: v.detach().clone().requires_grad_(False) for k, v in dict(self.params).items()}
        self.params = MappingProxyType(frozen)
        self.__dict__["_edit_id"] = _content_id(self.layer, frozen)

    def __setattr__(self, name: str, value) -> None:
        if name in ("layer", "params") and "_edit_id" in self.__dict__:
            raise AttributeError(f"An Edit's {name} is fixed once made (its id hashes it); make a new Edit.")
        super().__setattr__(name, value)

    @property
    def edit_id(self) -> str:
        return self.__dict__["_edit_id"]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.params.values())

    def module(self, lm: LoadedModel) -> torch.nn.Module:
        """The edited MLP as a private module (built once per edit and model)."""
        cached = self.__dict__.get("_module")
        if cached is None or cached[0] is not lm:
            check_edit(lm, self)
            cached = (lm, private_mlp(lm, self.layer, self.params))
            self.__dict__["_module"] = cached
        return cached[1]

    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file: the MLP's tensors plus JSON provenance (no pickle)."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"explorer_edit": json.dumps({**self.meta, "layer": self.layer, "edit_id": self.edit_id},
                                            default=str)}
        save_file({k: v.detach().to("cpu").contiguous() for k, v in self.params.items()}, str(path), metadata=meta)
        return path

    def to_base64(self) -> str:
        """The same bytes as :meth:`save`, as text (so a shared session's JSON can carry the edit)."""
        import base64
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            return base64.b64encode(self.save(Path(d) / "edit.safetensors").read_bytes()).decode("ascii")

    @classmethod
    def from_base64(cls, text: str, lm: LoadedModel | None = None) -> Edit:
        """Inverse of :meth:`to_base64`, with the same checks as :meth:`load`."""
        import base64
        import binascii
        import tempfile

        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError, TypeError) as e:
            raise EditError("The embedded edit is not valid base64.") from e
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "edit.safetensors"
            path.write_bytes(raw)
            return cls.load(path, lm)

    @classmethod
    def load(cls, path: str | Path, lm: LoadedModel | None = None) -> Edit:
        """Load and (given ``lm``) check model, layer and shapes; EditError says what is wrong."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise EditError(f"The edit file '{shorten(str(path), 200)}' {what}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_raw = (f.metadata() or {}).get("explorer_edit")
                params = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        except Exception as e:
            raise EditError(f"'{shorten(path.name)}' is not a readable edit file (safetensors): {type(e).__name__}.") from e
        if not meta_raw:
            raise EditError(f"'{shorten(path.name)}' has no SelfIE Explorer edit metadata.")
        try:
            meta = json.loads(meta_raw)
            layer = int(meta.pop("layer"))
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise EditError(f"'{shorten(path.name)}' has corrupt edit metadata.") from e
        meta.pop("edit_id", None)
        edit = cls(layer=layer, params=params, meta=meta)
        if lm is not None:
            check_edit(lm, edit)
        return edit


def _content_id(layer: int, params: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha1()
    h.update(str(layer).encode())
    for name in sorted(params):
        t = params[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return "edit-" + h.hexdigest()[:16]


def check_edit(lm: LoadedModel, edit: Edit) -> None:
    model_id = edit.meta.get("model_id")
    if model_id and model_id != lm.model_id:
        raise EditError(f"This edit was made for '{model_id}', not '{lm.model_id}'.")
    check_layer(lm, edit.layer)
    expected = dict(lm.arch.mlps[edit.layer - 1].named_parameters())
    if set(expected) != set(edit.params):
        raise EditError("The edit's tensors do not match this model's MLP.")
    for name, t in edit.params.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise EditError(f"The edit's '{name}' has shape {tuple(t.shape)}, the model's {tuple(expected[name].shape)}.")


def check_layer(lm: LoadedModel, layer) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= lm.n_layers:
        raise InputError(f"The layer must be a whole number from 1 to {lm.n_layers} (row L edits block L-1's MLP); "
                         f"got {layer!r}.")
    return layer


_CLONE_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_CLONE_LOCKS_GUARD = threading.Lock()
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")
# accelerate (device_map) replaces ``forward`` per instance and moves tensors in its own hook
_ACCELERATE_ATTRS = ("forward", "_old_forward", "_hf_hook")


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's own parameters live (with ``device_map`` that is not ``lm.device``)."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def _clone_lock(module: torch.nn.Module) -> threading.Lock:
    with _CLONE_LOCKS_GUARD:
        lock = _CLONE_LOCKS.get(module)
        if lock is None:
            lock = _CLONE_LOCKS[module] = threading.Lock()
        return lock


def _structural_clone(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A new module of the same class and attributes with private copies of its tensors.

    Built from the module's state rather than by ``copy.deepcopy`` of the shared module: no hook,
    accelerate wrapper or other thread's transient state travels with it.
    """
    new = object.__new__(type(module))
    state = dict(module.__dict__)
    for name in _ACCELERATE_ATTRS:
        state.pop(name, None)
    for name in _HOOK_DICTS:
        if name in state:
            state[name] = OrderedDict()
    state["_parameters"] = {
        n: None if p is None else torch.nn.Parameter(p.detach().to(device=device, dtype=dtype, copy=True),
                                                     requires_grad=False)
        for n, p in module._parameters.items()}
    state["_buffers"] = {n: None if b is None else b.detach().to(device=device, copy=True)
                         for n, b in module._buffers.items()}
    state["_modules"] = {n: None if c is None else _structural_clone(c, device, dtype)
                         for n, c in module._modules.items()}
    new.__dict__.update(state)
    return new


def private_mlp(lm: LoadedModel, layer: int, params: Mapping[str, torch.Tensor] | None = None,
                dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A private copy of block ``layer-1``'s MLP (optionally with ``params``), on that MLP's own device.

    Never swap parameters on the shared module (``functional_call`` does, briefly): another
    thread's forward pass would see them. The copy carries no hooks. Copies of one module are built
    one at a time (a per-module lock), so two sessions editing the same block do not race.
    """
    shared = lm.arch.mlps[layer - 1]
    with _clone_lock(shared), onloaded(shared):  # offloaded by a device map: copy its real weights
        device = module_device(shared)
        mlp = _structural_clone(shared, device, dtype or lm.dtype)
    if params is not None:
        with torch.no_grad():
            own = dict(mlp.named_parameters())
            for name, value in params.items():
                own[name].copy_(value.to(device=device, dtype=own[name].dtype))
    return mlp


def contribution(lm: LoadedModel, layer: int, mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What block ``layer-1`` adds to the residual from its MLP input ``x`` (post-MLP norm included)."""
    out = mlp(x)
    post = lm.arch.mlp_out_norms[layer - 1] if lm.arch.mlp_out_norms else None
    return post(out.to(lm.dtype)).to(out.dtype) if post is not None else out


@contextlib.contextmanager
def applied(lm: LoadedModel, edit: Edit | None) -> Iterator[None]:
    """Run the model with ``edit`` for this context's forward passes only (None: the stock model)."""
    if edit is None:
        yield
        return
    mlp = lm.arch.mlps[edit.layer - 1]
    private = edit.module(lm)

    def recompute(_out: torch.Tensor, args: tuple) -> torch.Tensor:
        return private(*args)

    with edit_output(mlp, recompute, variant=edit.edit_id):
        yield




@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings; ``beta`` weighs the locality term (keep the MLP's other outputs)."""

    steps: int = 20
    lr: float = 2e-3  # the paper suggests 3e-4; on the embedded model that closes only ~half the gap in 20 steps
    beta: float = 10.0

    def validate(self) -> TrainSettings:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"Steps must be a whole number from 1 to {MAX_STEPS}; got {self.steps!r}.")
        lr = self.lr
        if not isinstance(lr, (int, float)) or math.isnan(lr) or not 1e-7 <= lr <= 0.1:
            raise InputError(f"The learning rate must be between 1e-7 and 0.1; got {lr!r}.")
        if not isinstance(self.beta, (int, float)) or math.isnan(self.beta) or not 0 <= self.beta <= 1e4:
            raise InputError(f"The locality weight must be between 0 and 10000; got {self.beta!r}.")
        return self


def prompt_ids(lm: LoadedModel, text: str, chat: bool = False) -> list[int]:
    return tokenize_prompt(lm, text, chat=chat, max_tokens=512)


def mlp_io(lm: LoadedModel, ids: Sequence[int], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``layer-1``'s MLP input and the residual its contribution is added to, at every position.

    ``contribution(input) + residual`` reproduces row ``layer`` of the grid.
    """
    block, mlp = lm.arch.blocks[layer - 1], lm.arch.mlps[layer - 1]
    with torch.no_grad(), record([mlp], inputs=True) as ins, record([block]) as outs:
        lm.model(input_ids=torch.tensor([list(ids)], device=lm.device), use_cache=False, logits_to_keep=1)
        x = ins[0][-1][0].detach().clone()
        residual = outs[0][-1][0].detach() - contribution(lm, layer, mlp, x)
    return x, residual.clone()


CONCEPT_CONTEXT = "I am thinking about "


def concept_grid(lm: LoadedModel, phrase: str):
    """The grid of a concept phrase. A one-token phrase would sit at position 0, which most models use
    as an attention sink with an outsized, meaning-poor state, so it gets a short neutral lead-in."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError("The concept is empty: type a word or phrase.")
    grid = capture(lm, phrase)
    if grid.n_tokens < 2:
        grid = capture(lm, CONCEPT_CONTEXT + phrase.strip())
    return grid


def concept_state(lm: LoadedModel, phrase: str, layer: int) -> torch.Tensor:
    """The last-token state of a concept phrase at ``layer``: a target whose meaning the user can check."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError("The concept is empty: type a word or phrase.")
    check_layer(lm, layer)
    return concept_grid(lm, phrase).hidden[layer, -1].clone()


def reference_inputs(lm: LoadedModel, layer: int) -> torch.Tensor:
    return torch.cat([mlp_io(lm, prompt_ids(lm, t), layer)[0] for t in REFERENCE_TEXT])


def trainable(lm: LoadedModel, layer: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(frozen original, trainable copy) of block ``layer-1``'s MLP, both private and fp32."""
    original = private_mlp(lm, layer, dtype=torch.float32).requires_grad_(False)
    trained = private_mlp(lm, layer, dtype=torch.float32).requires_grad_(True)
    return original, trained


def edited_params(lm: LoadedModel, trained: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(lm.dtype).clone() for k, v in trained.state_dict().items()}
