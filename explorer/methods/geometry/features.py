"""Per-cell geometry of every block from one forward pass: spline regions of the MLP, and attention's
intrinsic dimension (SplineLLM; see docs/geometry.md).

For block b and token t, with x_t the MLP's input and h_t = W x_t + c the pre-activations of the
MLP's first linear layer (the gate of a gated MLP; ``c_fc`` / ``dense_h_to_4h`` of a plain one):

- on-fraction ``s_t = mean_k 1[h_tk > 0]``, the density of the token's region code;
- boundary distance ``d_t = min_k |h_tk| / ||w_k||``, the Euclidean distance from x_t to the
  nearest neuron hyperplane (the edge of its spline region);
- intrinsic dimension: over heads, the number of keys whose attention weight exceeds 10% of that
  head's largest weight for the query.

The hooks reduce each block's (T, d_ff) pre-activations and (H, T, T) attention weights to a few
numbers per token at once, so long prompts and wide models never hold them whole; the optional
region codes are the sign patterns packed 8 per byte (d_ff / 8 bytes per token).

Rows follow the grid: row L (1..N) is the state after block L-1, and its geometry is that of block
L-1, the block that produced it; row 0 (the embeddings) has no block and is NaN.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from explorer.core.architecture import _get_path
from explorer.core.errors import ModelLoadError
from explorer.core.hooks import output_tensor
from explorer.core.models import LoadedModel

ATTENTION_THRESHOLD = 0.1
_MLP_IN_NAMES = ("gate_proj", "w1", "gate_up_proj", "c_fc", "dense_h_to_4h", "fc1", "fc_in", "up_proj")
_FUSED_GATES = ("gate_up_proj",)  # gate and up projections in one matrix: the gate is the first half
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")

# Set only inside a geometry pass of this context: hooks act on it and attention runs eagerly.
_PASS: ContextVar[object | None] = ContextVar("explorer_geometry_pass", default=None)
_EAGER: ContextVar[bool] = ContextVar("explorer_geometry_eager", default=False)
_PATCH_LOCK = threading.Lock()
_CONTEXTUAL: dict[type, type] = {}


@dataclass(frozen=True)
class GeometryGrid:
    """Geometry of one prompt's cells.

    ``on_fraction``, ``distance`` and ``intrinsic_dim``: float arrays (N+1, T); row L is block
    L-1 and row 0 is NaN. ``codes``: uint8 (N, T, ceil(d_ff / 8)), the region code of block b at
    token t packed big-endian (``np.unpackbits`` gives the d_ff signs), or None when not asked for.
    ``last_states``: float32 (N+1, d), the last token's residual state at every row (row N un-normed,
    as in the grid), or None when not asked for.
    """

    on_fraction: np.ndarray
    distance: np.ndarray
    intrinsic_dim: np.ndarray
    d_ff: tuple[int, ...]
    n_heads: tuple[int, ...]
    codes: np.ndarray | None = None
    last_states: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.on_fraction.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.on_fraction.shape[1])

    @property
    def log_distance(self) -> np.ndarray:
        """Natural log of the boundary distance (N+1, T); row 0 NaN."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.distance)

    def to_frame(self):
        """Long form: one row per cell (layer = row, block = row - 1), for CSV/JSON."""
        import pandas as pd

        rows, toks = np.meshgrid(np.arange(1, self.n_rows), np.arange(self.n_tokens), indexing="ij")
        return pd.DataFrame({"layer": rows.ravel(), "block": rows.ravel() - 1, "token": toks.ravel(),
                             "on_fraction": self.on_fraction[1:].ravel(), "distance": self.distance[1:].ravel(),
                             "intrinsic_dim": self.intrinsic_dim[1:].ravel()})


def region_stats(h: torch.Tensor, row_norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, d)`` per token from pre-activations ``h`` (..., d_ff) and the rows' norms (d_ff,)."""
    h = h.float()
    on = (h > 0).float().mean(-1)
    dist = (h.abs() / row_norms.float()).amin(-1)
    return on, dist


def intrinsic_dimension(weights: torch.Tensor, threshold: float = ATTENTION_THRESHOLD) -> torch.Tensor:
    """Keys above ``threshold`` x the head's max for each query, summed over heads: (..., H, T, S) -> (..., T)."""
    w = weights.float()
    peak = w.amax(-1, keepdim=True)
    return (w > threshold * peak).sum(-1).sum(-2).float()


def pack_signs(h: torch.Tensor) -> torch.Tensor:
    """Sign pattern ``h > 0`` (..., d_ff) packed 8 per byte, big-endian: (..., ceil(d_ff / 8)) uint8."""
    bits = h > 0
    pad = (-bits.shape[-1]) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=h.device)
    return (bits.reshape(*bits.shape[:-1], -1, 8).to(torch.uint8) * weights).sum(-1).to(torch.uint8)


@dataclass(frozen=True)
class MlpInput:
    """Where block b's region code comes from: ``module``'s output, its first ``width`` units."""

    module: nn.Module
    width: int
    row_norms: torch.Tensor


def find_mlp_input(mlp: nn.Module, override: str | None = None) -> MlpInput:
    """The MLP's first linear layer (the gate where there is one) and its rows' norms ||w_k||."""
    name = override
    if name is None:
        name = next((n for n in _MLP_IN_NAMES if isinstance(getattr(mlp, n, None), nn.Module)), None)
    if name is None:
        raise ModelLoadError("Could not find the MLP's first linear layer; pass mlp_in='name' (e.g. 'gate_proj').")
    module = _get_path(mlp, name)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ModelLoadError(f"The MLP's '{name}' has no weight matrix.")
    with torch.no_grad():
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
        norms = weight.float().norm(dim=1) if isinstance(module, nn.Linear) else weight.float().norm(dim=0)
    width = norms.shape[0] // 2 if name.split(".")[-1] in _FUSED_GATES else norms.shape[0]
    return MlpInput(module, width, norms[:width])


def find_attention(block: nn.Module, override: str | None = None) -> nn.Module:
    if override is not None:
        return _get_path(block, override)
    for name in _ATTN_NAMES:
        child = getattr(block, name, None)
        if isinstance(child, nn.Module):
            return child
    raise ModelLoadError("Could not find the block's attention; pass attn='name' (e.g. 'self_attn').")


def _contextual_class(cls: type) -> type:
    """A subclass of a config class whose attention implementation reads "eager" inside a geometry
    pass of the calling context and the configured one everywhere else."""
    if cls in _CONTEXTUAL or cls in _CONTEXTUAL.values():
        return _CONTEXTUAL.get(cls, cls)
    base = getattr(cls, "_attn_implementation", None)
    if not isinstance(base, property):
        raise ModelLoadError("This model's configuration has no switchable attention implementation.")

    def fget(self):
        return "eager" if _EAGER.get() else base.fget(self)  # type: ignore[misc]

    sub = type(cls.__name__, (cls,), {"_attn_implementation": property(fget, base.fset),
                                      "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    _CONTEXTUAL[cls] = sub
    return sub


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Eager attention (which returns its weights) for this context's passes only.

    The shared model's configs are given, once, a class whose attention implementation depends on
    the calling context; other threads' passes keep their implementation and masks mid-flight.
    """
    with _PATCH_LOCK:
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(type(config), "_attn_implementation"):
                config.__class__ = _contextual_class(type(config))
    reset = _EAGER.set(True)
    try:
        yield
    finally:
        _EAGER.reset(reset)


def geometry(lm: LoadedModel, ids: list[int], *, codes: bool = False, last_states: bool = False,
             mlp_in: str | None = None, attn: str | None = None) -> GeometryGrid:
    """One eager forward pass over ``ids`` with reducing hooks on every block (see module docstring).

    ``last_states`` also keeps the last token's state at every row (for a probe on raw states);
    ``mlp_in`` / ``attn``: paths inside each MLP / block for layouts the name patterns miss. (One
    function, long because it keeps the hooks and what they fill live only in this pass.)
    """
    arch = lm.arch
    n = arch.n_layers
    inputs = [find_mlp_input(m, mlp_in) for m in arch.mlps]
    attns = [find_attention(b, attn) for b in arch.blocks]
    norms = [i.row_norms.to(lm.device) for i in inputs]
    t = len(ids)
    out = {k: torch.full((n + 1, t), float("nan")) for k in ("on", "dist", "id")}
    packed: list[torch.Tensor | None] = [None] * n
    states: list[torch.Tensor | None] = [None] * (n + 1)
    marker = object()

    def mlp_hook(b: int):
        def hook(_mod, _args, output):
            if _PASS.get() is not marker:
                return
            h = output[0, :, :inputs[b].width]
            on, dist = region_stats(h, norms[b])
            out["on"][b + 1], out["dist"][b + 1] = on.cpu(), dist.cpu()
            if codes:
                packed[b] = pack_signs(h).cpu()
        return hook

    def attn_hook(b: int):
        def hook(_mod, _args, output):
            if _PASS.get() is not marker:
                return
            weights = output[1] if isinstance(output, tuple | list) and len(output) > 1 else None
            if weights is None:
                raise ModelLoadError("The attention module returned no weights; pass attn='name' of the block's "
                                     "attention.")
            out["id"][b + 1] = intrinsic_dimension(weights[0]).cpu()
        return hook

    def state_hook(row: int):
        def hook(_mod, args, kwargs, output=None):
            if _PASS.get() is not marker:
                return
            hidden = output_tensor(output) if output is not None else kwargs.get("hidden_states", args[0] if args else None)
            states[row] = hidden[0, -1].float().cpu()
        return hook

    handles = [i.module.register_forward_hook(mlp_hook(b)) for b, i in enumerate(inputs)]
    handles += [a.register_forward_hook(attn_hook(b)) for b, a in enumerate(attns)]
    if last_states:
        handles.append(arch.blocks[0].register_forward_pre_hook(state_hook(0), with_kwargs=True))
        handles += [blk.register_forward_hook(state_hook(b + 1), with_kwargs=True) for b, blk in enumerate(arch.blocks)]
    reset = _PASS.set(marker)
    try:
        with torch.inference_mode(), eager_attention(cast(nn.Module, lm.model)):
            lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False, logits_to_keep=1)
    finally:
        _PASS.reset(reset)
        for handle in handles:
            handle.remove()
    heads = tuple(int(getattr(a, "num_heads", 0) or getattr(getattr(a, "config", None), "num_attention_heads", 0))
                  for a in attns)
    code_array = np.stack([p.numpy() for p in packed]) if codes else None  # type: ignore[union-attr]
    state_array = np.stack([s.numpy() for s in states]) if last_states else None  # type: ignore[union-attr]
    return GeometryGrid(out["on"].numpy().astype(float), out["dist"].numpy().astype(float),
                        out["id"].numpy().astype(float), tuple(i.width for i in inputs), heads, code_array,
                        state_array)


def hamming(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """Number of differing region-code bits between packed codes (..., bytes) -> (...)."""
    return np.unpackbits(np.bitwise_xor(codes_a, codes_b), axis=-1).sum(-1)
