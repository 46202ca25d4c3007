"""GCAV steering: move each state just onto a probe's target probability, per sample and per step.

For a probe P(e) = sigmoid(w.e + b) with CAV v = w/||w|| and target p0 (s0 = ln(p0/(1-p0))):

- add the concept (reach at least p0):   eps = 1[P(e) < p0] * (s0 - b - w.e) / ||w||
- remove the concept (at most p0):       eps = 1[P(e) > p0] * (s0 - b - w.e) / ||w||

and e' = e + eps v, so w.e' + b = s0 exactly for a state that missed the target, while a state
that met it is returned bit-identical. Several concepts at once: minimise sum |eps_i| subject to
every probe's constraint (scipy SLSQP on eps = p - n, p, n >= 0, which makes the objective linear).

The edit is applied to grid row L for every position of every forward pass in the calling context
(the prompt's prefill and each decoding step): row 0 at the input of block 0, row L >= 1 at the
output of block L-1 (the same tensor as block L's input, so grids captured under steering show the
moved state in row L). States far outside the probe's training range (norm above ``max_norm_ratio``
times the typical training norm: the attention-sink position) are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from explorer.core.errors import EditError, InputError
from explorer.core.hooks import edit_input, edit_output
from explorer.core.models import LoadedModel
from explorer.methods.concepts.probe import Probe

MODES = ("add", "remove")


def target_logit(p0: float) -> float:
    """s0 = ln(p0 / (1 - p0)); p0 must lie strictly between 0 and 1."""
    if isinstance(p0, bool) or not isinstance(p0, (int, float)) or math.isnan(p0) or not 0.0 < p0 < 1.0:
        raise InputError(f"The target probability p0 must be strictly between 0 and 1; got {p0!r}.")
    return math.log(p0 / (1.0 - p0))


def p0_from_strength(k: float, mode: str) -> float:
    """The strength scale: p0 = 1 - 10^-k to add the concept, 10^-k to remove it (k in (0, 12])."""
    check_mode(mode)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or math.isnan(k) or not 0 < k <= 12:
        raise InputError(f"The strength k must be a number above 0 and at most 12; got {k!r}.")
    return 1.0 - 10.0 ** -k if mode == "add" else 10.0 ** -k


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"The steering mode must be 'add' or 'remove'; got {mode!r}.")
    return mode


@dataclass(frozen=True)
class Target:
    """One concept's target: its probes by row, ``mode`` add/remove, and ``p0``."""

    name: str
    probes: dict[int, Probe]
    mode: str
    p0: float

    def __post_init__(self) -> None:
        check_mode(self.mode)
        target_logit(self.p0)


def closed_form(states: torch.Tensor, probe: Probe, p0: float, mode: str) -> np.ndarray:
    """eps (...,) for states (..., d): what each state needs along v to reach the target (0 if met)."""
    s0 = target_logit(p0)
    logit = probe.logit(states)
    need = logit < s0 if check_mode(mode) == "add" else logit > s0
    return np.where(need, (s0 - logit) / probe.norm, 0.0)


def slsqp(state: np.ndarray, probes: Sequence[Probe], p0s: Sequence[float], modes: Sequence[str]) -> np.ndarray:
    """Smallest sum |eps_i| with every probe meeting its target after e + sum_i eps_i v_i (float64).

    When SLSQP does not reach a point that meets every target (the targets contradict each other, or
    the solver stops early), this raises :class:`EditError` with one sentence: the per-concept
    closed forms are never substituted silently.
    """
    from scipy.optimize import minimize

    m = len(probes)
    w = np.stack([p.w for p in probes])
    v = np.stack([p.vector for p in probes])
    b = np.array([p.b for p in probes])
    s0 = np.array([target_logit(p) for p in p0s])
    sign = np.array([1.0 if md == "add" else -1.0 for md in modes])
    base = w @ state + b
    gain = w @ v.T  # (m, m): how eps_i moves probe j's logit

    def slack(x: np.ndarray) -> np.ndarray:
        return sign * (base + gain @ (x[:m] - x[m:]) - s0)

    if np.all(slack(np.zeros(2 * m)) >= 0):
        return np.zeros(m)
    single = np.array([closed_form(torch.from_numpy(state), p, q, md) for p, q, md in zip(probes, p0s, modes)])
    x0 = np.concatenate([np.maximum(single, 0), np.maximum(-single, 0)])
    jac = np.concatenate([sign[:, None] * gain, -sign[:, None] * gain], axis=1)
    res = minimize(lambda x: x.sum(), x0, jac=lambda x: np.ones_like(x), method="SLSQP",
                   bounds=[(0, None)] * (2 * m), constraints=[{"type": "ineq", "fun": slack, "jac": lambda x: jac}],
                   options={"ftol": 1e-12, "maxiter": 200})
    if not res.success or not np.all(slack(res.x) > -1e-6):
        raise EditError(f"The several-concept steering found no step that meets every target at once (SLSQP: "
                        f"{str(res.message).rstrip('.')}); the targets may contradict each other, so steer fewer "
                        "concepts or ask for less.")
    return res.x[:m] - res.x[m:]


@dataclass
class StepLog:
    """The eps applied per forward pass: one row per (row L, pass) with the eps of every concept at
    the last position of each sequence, how many states were moved, and ``max_ratio``: the largest
    step length |sum_i eps_i v_i| over the pass's states, relative to the typical state norm there.
    Bounded (oldest dropped)."""

    rows: deque = field(default_factory=lambda: deque(maxlen=5000))

    def add(self, layer: int, step: int, eps: np.ndarray, moved: int, positions: int,
            max_ratio: float = 0.0) -> None:
        self.rows.append({"layer": layer, "step": step, "eps": eps.tolist(), "moved": moved, "positions": positions,
                          "max_ratio": float(max_ratio)})

    def records(self) -> list[dict]:
        return list(self.rows)

    def largest_ratio(self) -> float:
        """The largest step relative to the typical state norm over every logged pass (0 if none)."""
        return max((float(r.get("max_ratio", 0.0)) for r in self.rows), default=0.0)


def step_ratio(eps: np.ndarray, probes: Sequence[Probe]) -> float:
    """The largest |sum_i eps_i v_i| over states (eps: (m, n)) relative to the typical state norm."""
    if eps.size == 0 or not np.any(eps):
        return 0.0
    v = np.stack([p.vector for p in probes])
    steps = np.linalg.norm(eps.reshape(len(probes), -1).T @ v, axis=1)
    return float(steps.max() / max(max(p.typical_norm for p in probes), 1e-12))


def gcav_step(hidden: torch.Tensor, targets: Sequence[Target], layer: int,
              max_norm_ratio: float = 8.0) -> tuple[torch.Tensor, np.ndarray]:
    """The edited states and eps (m, ...) for ``hidden`` (..., d) at grid row ``layer``.

    A state whose eps are all zero comes back bit-identical (it is never recomputed).
    """
    probes = [t.probes[layer] for t in targets]
    shape = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    x = flat.detach().to("cpu", torch.float64).numpy()
    in_range = np.linalg.norm(x, axis=1) <= max_norm_ratio * max(p.typical_norm for p in probes)
    if len(targets) == 1:
        eps = closed_form(flat, probes[0], targets[0].p0, targets[0].mode)[None]
    else:
        eps = np.zeros((len(targets), x.shape[0]))
        p0s, modes = [t.p0 for t in targets], [t.mode for t in targets]
        for i in np.flatnonzero(in_range):
            eps[:, i] = slsqp(x[i], probes, p0s, modes)
    eps[:, ~in_range] = 0.0
    moved = np.flatnonzero(np.any(eps != 0, axis=0))
    if moved.size == 0:
        return hidden, eps.reshape(len(targets), *shape)
    v = np.stack([p.vector for p in probes])  # (m, d)
    new = x[moved] + eps[:, moved].T @ v
    out = flat.clone()
    out[torch.as_tensor(moved, device=flat.device)] = torch.as_tensor(new, dtype=flat.dtype, device=flat.device)
    return out.reshape(hidden.shape), eps.reshape(len(targets), *shape)


def check_layers(lm: LoadedModel, layers: Sequence[int], probes_at: Sequence[dict[int, Probe]] = ()) -> list[int]:
    """Rows 0..N, each with a probe for every concept; one sentence otherwise."""
    if not layers:
        raise InputError("Choose at least one layer to steer at.")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= lm.n_layers:
            raise InputError(f"Layer {layer!r} is out of range: this model's grid has layers 0 to {lm.n_layers}.")
        for probes in probes_at:
            if int(layer) not in probes:
                raise InputError(f"The concept has no probe at layer {layer}; train it there first.")
        out.append(int(layer))
    return sorted(set(out))


def variant_id(kind: str, parts: Sequence) -> str:
    """A stable name for a steering: the same vectors, targets and rows give the same id."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return f"{kind}-{h.hexdigest()[:12]}"


@contextlib.contextmanager
def _at_row(lm: LoadedModel, layer: int, fn, variant: str) -> Iterator[None]:
    """Apply ``fn`` to grid row ``layer`` (row 0: block 0's input; row L: block L-1's output)."""
    if layer == 0:
        with edit_input(lm.arch.blocks[0], fn, variant=variant):
            yield
    else:
        with edit_output(lm.arch.blocks[layer - 1], lambda out, _args: fn(out), variant=variant):
            yield


# The step log of each GCAV steering entered in this context, by its variant tag. The hook reads it at
# call time, so a pass run elsewhere (a shared batch holding several users' rows, in a neutral
# context) is logged to nobody's log rather than to whichever user's closure came first.
_LOGS: ContextVar[Mapping[str, StepLog]] = ContextVar("explorer_gcav_logs", default=MappingProxyType({}))


@contextlib.contextmanager
def gcav(lm: LoadedModel, targets: Sequence[Target], layers: Sequence[int], *,
         max_norm_ratio: float = 8.0, log: StepLog | None = None) -> Iterator[StepLog]:
    """Run the model with GCAV steering toward every target at every row in ``layers``; yields the log of
    this context's own passes."""
    if not targets:
        raise InputError("Choose at least one concept to steer.")
    rows = check_layers(lm, layers, [t.probes for t in targets])
    tag = variant_id("gcav", [x for t in targets for x in (t.name, t.mode, t.p0)] + rows +
                     [t.probes[r].w for t in targets for r in rows])
    log = log if log is not None else StepLog()
    reset = _LOGS.set(MappingProxyType({**_LOGS.get(), tag: log}))
    try:
        with contextlib.ExitStack() as stack:
            for row in rows:
                counter = [0]

                def fn(h: torch.Tensor, row: int = row, counter: list[int] = counter) -> torch.Tensor:
                    out, eps = gcav_step(h, targets, row, max_norm_ratio)
                    own = _LOGS.get().get(tag)
                    if own is not None:
                        counter[0] += 1
                        last = eps[..., -1] if eps.ndim == 3 else eps
                        own.add(row, counter[0], np.asarray(last), int(np.count_nonzero(np.any(eps != 0, axis=0))),
                                int(h.shape[-2]) if h.dim() == 3 else 1,
                                step_ratio(eps.reshape(len(targets), -1), [t.probes[row] for t in targets]))
                    return out

                stack.enter_context(_at_row(lm, row, fn, f"{tag}@{row}"))
            yield log
    finally:
        _LOGS.reset(reset)


@contextlib.contextmanager
def fixed(lm: LoadedModel, probes: dict[int, Probe], layers: Sequence[int], alpha: float,
          mode: str) -> Iterator[None]:
    """The fixed-coefficient comparison: add (or subtract) ``alpha`` typical state norms of v at every
    position of every pass, whatever the state already holds."""
    check_mode(mode)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or math.isnan(alpha) or abs(alpha) > 20:
        raise InputError(f"The fixed strength must be a number between -20 and 20; got {alpha!r}.")
    rows = check_layers(lm, layers, [probes])
    sign = 1.0 if mode == "add" else -1.0
    tag = variant_id("fixed", [mode, float(alpha), *rows, *[probes[r].w for r in rows]])
    with contextlib.ExitStack() as stack:
        for row in rows:
            p = probes[row]
            delta = torch.as_tensor(sign * alpha * p.typical_norm * p.vector, dtype=lm.dtype, device=lm.device)
            stack.enter_context(_at_row(lm, row, lambda h, d=delta: h + d.to(h.dtype), f"{tag}@{row}"))
        yield
