"""Cross-model reading: interpret a state of model A with model B through a fitted affine map.

The map W, b is fitted by (ridge) least squares from A's states at layer l to B's states at layer
l* over the tokens of shared text; both models must tokenise the text the same way (the map pairs
states position by position). R² on held-out tokens says how much of B's state the map recovers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.data import CORPUS, DATA_DIR
from explorer.core.errors import InputError
from explorer.core.grid import capture_ids
from explorer.core.models import LoadedModel
from explorer.interpret.engine import Interpreter, InterpretSettings


@dataclass
class AffineMap:
    """h_B ≈ h_A @ weight + bias; fitted from ``layer_a`` of A to ``layer_b`` of B."""

    weight: torch.Tensor  # (d_A, d_B)
    bias: torch.Tensor  # (d_B,)
    layer_a: int
    layer_b: int
    r2_train: float
    r2_heldout: float

    def __call__(self, states: torch.Tensor) -> torch.Tensor:
        return states.float() @ self.weight + self.bias


def _r2(pred: torch.Tensor, true: torch.Tensor) -> float:
    ss_res = ((true - pred) ** 2).sum()
    ss_tot = ((true - true.mean(0)) ** 2).sum()
    return float(1 - ss_res / ss_tot)


SHARED_TEXT = DATA_DIR / "shared_text.txt"


def _corpus_texts(texts: list[str] | None) -> list[str]:
    """The evaluation corpus plus ~70 everyday sentences: ~1,400 tokens, more than the width of small
    models, so the least-squares problem is overdetermined."""
    if texts:
        return texts
    return [s for f in (CORPUS, SHARED_TEXT) for s in f.read_text(encoding="utf-8").splitlines() if s.strip()]


def _stacks(lm_a: LoadedModel, lm_b: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's states of both models over the shared text: (rows, tokens, d) each."""
    xs, ys = [], []
    for t in texts:
        ids_a = lm_a.tokenizer.encode(t, add_special_tokens=True)
        ids_b = lm_b.tokenizer.encode(t, add_special_tokens=True)
        if ids_a != ids_b:
            raise InputError("The two models tokenise the text differently; cross-model maps need one tokenizer.")
        # Position 0 is an attention sink with an outsized norm in most models: leave it out.
        xs.append(capture_ids(lm_a, ids_a).hidden[:, 1:].float())
        if lm_b is not lm_a:  # one model read at another layer needs one pass
            ys.append(capture_ids(lm_b, ids_b).hidden[:, 1:].float())
    x = torch.cat(xs, dim=1)
    return x, (x if lm_b is lm_a else torch.cat(ys, dim=1))


def paired_states(lm_a: LoadedModel, lm_b: LoadedModel, layer_a: int, layer_b: int,
                  texts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A's states at ``layer_a`` and B's at ``layer_b`` for the same tokens of shared text: (N, d_A), (N, d_B)."""
    x, y = _stacks(lm_a, lm_b, _corpus_texts(texts))
    return x[layer_a], y[layer_b]


def _solve(x: torch.Tensor, y: torch.Tensor, layer_a: int, layer_b: int, ridge: float, heldout: float,
           seed: int) -> AffineMap:
    n = x.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(n * heldout))
    test, train = torch.as_tensor(order[:n_test]), torch.as_tensor(order[n_test:])
    xa = torch.cat([x[train], torch.ones(len(train), 1)], dim=1).double()
    ya = y[train].double()
    gram = xa.T @ xa
    # ridge is relative to the mean feature energy, so one setting suits states of any scale
    eye = torch.eye(xa.shape[1], dtype=torch.float64) * ridge * gram.diagonal()[:-1].mean()
    eye[-1, -1] = 0  # no penalty on the bias
    sol = torch.linalg.solve(gram + eye, xa.T @ ya)
    weight, bias = sol[:-1].float(), sol[-1].float()
    m = AffineMap(weight, bias, layer_a, layer_b, 0.0, 0.0)
    m.r2_train = _r2(m(x[train]), y[train])
    m.r2_heldout = _r2(m(x[test]), y[test])
    return m


def fit_affine(lm_a: LoadedModel, lm_b: LoadedModel, layer_a: int, layer_b: int, *, ridge: float = 1e-2,
               heldout: float = 0.2, seed: int = 0, texts: list[str] | None = None) -> AffineMap:
    x, y = paired_states(lm_a, lm_b, layer_a, layer_b, texts)
    return _solve(x, y, layer_a, layer_b, ridge, heldout, seed)


class CrossReader:
    """Reads model A's states with model B; the shared text is run through both models once, so
    maps for any pair of layers are then fitted in a fraction of a second (and kept)."""

    def __init__(self, lm_a: LoadedModel, lm_b: LoadedModel, *, ridge: float = 1e-2, texts: list[str] | None = None):
        self.lm_a, self.lm_b, self.ridge = lm_a, lm_b, ridge
        self._x, self._y = _stacks(lm_a, lm_b, _corpus_texts(texts))
        self._maps: dict[tuple[int, int], AffineMap] = {}
        self._lock = threading.Lock()

    @property
    def n_tokens(self) -> int:
        return int(self._x.shape[1])

    def map(self, layer_a: int, layer_b: int) -> AffineMap:
        if not 0 <= layer_a < self._x.shape[0] or not 0 <= layer_b < self._y.shape[0]:
            raise InputError(f"Layers must be 0-{self._x.shape[0] - 1} for the source model and "
                             f"0-{self._y.shape[0] - 1} for the reader.")
        with self._lock:
            m = self._maps.get((layer_a, layer_b))
            if m is None:
                m = self._maps[(layer_a, layer_b)] = _solve(self._x[layer_a], self._y[layer_b], layer_a, layer_b,
                                                            self.ridge, 0.2, 0)
            return m

    def read(self, states_a: torch.Tensor, layer_a: int, layer_b: int, settings: InterpretSettings,
             interpreter: Interpreter | None = None) -> tuple[AffineMap, list[str]]:
        """SelfIE readings by B of A's states (B, d_A) taken at ``layer_a``, mapped to B's ``layer_b``."""
        m = self.map(layer_a, layer_b)
        return m, interpret_across(self.lm_b, m, states_a, settings, interpreter)


def interpret_across(lm_b: LoadedModel, mapping: AffineMap, states_a: torch.Tensor, settings: InterpretSettings,
                     interpreter: Interpreter | None = None) -> list[str]:
    """Read A's states (B, d_A) with model B: map them into B's space, then SelfIE on B."""
    interp = interpreter or Interpreter(lm_b)
    gen = interp.generate_now(mapping(states_a).to(lm_b.dtype), settings)
    return [lm_b.tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen.ids]
