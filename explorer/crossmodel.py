"""Cross-model reading: interpret a state of model A with model B through a fitted affine map.

The map W, b is fitted by (ridge) least squares from A's states at layer l to B's states at layer
l* over the tokens of shared text; both models must tokenise the text the same way (the map pairs
states position by position). R² on held-out tokens says how much of B's state the map recovers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.errors import InputError
from explorer.evaluate import CORPUS
from explorer.grid import capture_ids
from explorer.interpret import Interpreter, InterpretSettings
from explorer.models import LoadedModel


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


def paired_states(lm_a: LoadedModel, lm_b: LoadedModel, layer_a: int, layer_b: int,
                  texts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    texts = texts or [s for s in CORPUS.read_text(encoding="utf-8").splitlines() if s.strip()]
    xs, ys = [], []
    for t in texts:
        ids_a = lm_a.tokenizer.encode(t, add_special_tokens=True)
        ids_b = lm_b.tokenizer.encode(t, add_special_tokens=True)
        if ids_a != ids_b:
            raise InputError("The two models tokenise the text differently; cross-model maps need one tokenizer.")
        # Position 0 is an attention sink with an outsized norm in most models: leave it out.
        xs.append(capture_ids(lm_a, ids_a).hidden[layer_a, 1:])
        ys.append(capture_ids(lm_b, ids_b).hidden[layer_b, 1:])
    return torch.cat(xs), torch.cat(ys)


def fit_affine(lm_a: LoadedModel, lm_b: LoadedModel, layer_a: int, layer_b: int, *, ridge: float = 1e-2,
               heldout: float = 0.2, seed: int = 0, texts: list[str] | None = None) -> AffineMap:
    x, y = paired_states(lm_a, lm_b, layer_a, layer_b, texts)
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


def interpret_across(lm_b: LoadedModel, mapping: AffineMap, states_a: torch.Tensor, settings: InterpretSettings,
                     interpreter: Interpreter | None = None) -> list[str]:
    """Read A's states (B, d_A) with model B: map them into B's space, then SelfIE on B."""
    interp = interpreter or Interpreter(lm_b)
    gen = interp.generate_now(mapping(states_a).to(lm_b.dtype), settings)
    return [lm_b.tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen.ids]
