"""Linear probes: one calibrated probe per layer on the prompts' hidden states.

The probe at row L is P(e) = sigmoid(w.e + b) on the residual-stream state e of grid row L, in the
model's own coordinates (steering adds to the raw residual stream). Two kinds:

- ``logistic``: L2 logistic regression on standardised states z = (e - mu) / s, class-balanced, its
  regularisation C chosen by cross-validated log-loss on the training part and its logits divided
  by a temperature fitted on the out-of-fold logits (``calibration.py``); mapped back with
  w = w_z / s, b = b_z - sum(w_z * mu / s).
- ``mean-difference``: the direction of the difference of the two classes' mean states (raw
  coordinates; the limit of strongly regularised logistic regression), with its slope and bias
  fitted by logistic regression on the 1-D projection (Platt scaling). It reads a little less
  sharply and moves the model's text far more under steering (docs/concepts.md).

The concept activation vector is v = w / ||w||.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.grid import tokenize_prompt
from explorer.core.hooks import record
from explorer.core.models import LoadedModel
from explorer.methods.concepts.calibration import (
    calibrated_logistic,
    expected_calibration_error,
    log_loss,
    platt_1d,
)

POOLINGS = ("last", "mean")
PROBE_KINDS = ("logistic", "mean-difference")


@dataclass(frozen=True)
class Probe:
    """The probe of one grid row. ``w``: (d,) float64 in model coordinates; ``b``: bias; held-out
    ``accuracy`` and ``auc``, and ``train_accuracy``; ``typical_norm``: mean norm of the training
    states (the scale of the CAV when it is read, and the yardstick for out-of-range states);
    ``separation``: held-out d' of the logits (gap of the class means over their pooled standard
    deviation), a scale-free score that still ranks rows when several reach 100% accuracy;
    ``ece`` and ``log_loss``: held-out expected calibration error and log-loss; ``c``: the chosen
    regularisation (NaN for a mean-difference probe); ``temperature``: what the logits were divided by."""

    layer: int
    w: np.ndarray
    b: float
    accuracy: float
    auc: float
    train_accuracy: float
    typical_norm: float
    separation: float = 0.0
    ece: float = float("nan")
    log_loss: float = float("nan")
    c: float = float("nan")
    temperature: float = 1.0

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.w))

    @property
    def vector(self) -> np.ndarray:
        """The CAV v = w / ||w|| (points toward the concept)."""
        return self.w / max(self.norm, 1e-12)

    def logit(self, states: np.ndarray | torch.Tensor) -> np.ndarray:
        """w.e + b for states (..., d)."""
        x = states.detach().to("cpu", torch.float64).numpy() if isinstance(states, torch.Tensor) else states
        return np.asarray(x, dtype=np.float64) @ self.w + self.b

    def prob(self, states: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(concept | e) for states (..., d)."""
        return 1.0 / (1.0 + np.exp(-self.logit(states)))

    def record(self) -> dict:
        return {"layer": self.layer, "accuracy": self.accuracy, "auc": self.auc, "ece": self.ece,
                "log_loss": self.log_loss, "train_accuracy": self.train_accuracy, "separation": self.separation,
                "w_norm": self.norm, "typical_norm": self.typical_norm, "c": self.c, "temperature": self.temperature}


def _batch_states(lm: LoadedModel, batch: list[list[int]], pooling: str) -> torch.Tensor:
    """(B, N+1, d) float32 pooled states of token sequences run as one right-padded batch.

    Right padding needs no attention mask: causal attention never lets a real token see the pads
    after it, and positions still count from 0, so every real token's state is its unpadded one.
    The mean leaves out position 0 when there are others: most models park an outsized "attention
    sink" state there (norms ~100x the rest on SmolLM2) that would swamp the average.
    """
    lengths = torch.tensor([len(ids) for ids in batch])
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(batch), int(lengths.max())), int(pad), dtype=torch.long)
    for i, seq in enumerate(batch):
        ids[i, :len(seq)] = torch.tensor(seq)
    blocks = lm.arch.blocks
    with torch.inference_mode(), record([blocks[0]], inputs=True) as ins, record(blocks) as outs:
        lm.model(input_ids=ids.to(lm.device), use_cache=False, logits_to_keep=1)
    rows = torch.stack([ins[0][-1]] + [o[-1] for o in outs], dim=1).float().cpu()  # (B, N+1, T, d)
    if pooling == "last":
        return rows[torch.arange(len(batch)), :, lengths - 1]
    out = []
    for i, n in enumerate(lengths.tolist()):
        out.append(rows[i, :, 1:n].mean(dim=1) if n > 1 else rows[i, :, 0])
    return torch.stack(out)


def prompt_states(lm: LoadedModel, text: str, pooling: str = "last") -> torch.Tensor:
    """(N+1, d) float32: every row's state at the prompt's last token, or the mean over its tokens.

    Runs in the caller's context, so a control edit or steering applied there is seen.
    """
    return collect_states(lm, [text], pooling)[0]


def collect_states(lm: LoadedModel, texts: Sequence[str], pooling: str = "last",
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, batch_size: int = 16) -> torch.Tensor:
    """(n, N+1, d) float32 states of every prompt, in batches; ``progress(done, total)`` after each."""
    if pooling not in POOLINGS:
        raise InputError(f"Pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    seqs = [tokenize_prompt(lm, t, chat=False, max_tokens=512) for t in texts]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    out: list[torch.Tensor | None] = [None] * len(seqs)
    for start in range(0, len(order), batch_size):
        if should_stop is not None and should_stop():
            raise InputError("Training was stopped.")
        part = order[start:start + batch_size]
        for i, st in zip(part, _batch_states(lm, [seqs[i] for i in part], pooling)):
            out[i] = st
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return torch.stack(out)  # type: ignore[arg-type]


def fit_probe(layer: int, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              c: float | None = None, kind: str = "logistic", calibrate: bool = True) -> Probe:
    """One probe (see the module docstring); ``c=None`` chooses C by cross-validated log-loss, a number
    fixes it; ``calibrate``: fit the temperature (else T = 1). Scores come from the held-out ``x_test``."""
    from sklearn.metrics import roc_auc_score

    if kind not in PROBE_KINDS:
        raise InputError(f"The probe kind must be one of {', '.join(PROBE_KINDS)}; got {kind!r}.")
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=int)
    y_test = np.asarray(y_test, dtype=int)
    if kind == "logistic":
        mu = x_train.mean(axis=0)
        s = x_train.std(axis=0)
        s[s < 1e-8] = 1.0
        fit = calibrated_logistic((x_train - mu) / s, y_train, c, temperature=calibrate)
        w = fit.wz / s
        b = float(fit.bz - np.sum(fit.wz * mu / s))
        chosen, temperature = fit.c, fit.temperature
    else:
        diff = x_train[y_train == 1].mean(axis=0) - x_train[y_train == 0].mean(axis=0)
        v = diff / max(float(np.linalg.norm(diff)), 1e-12)
        a, b = platt_1d(x_train @ v, y_train)
        w, chosen, temperature = a * v, float("nan"), 1.0
    typical = float(np.linalg.norm(x_train, axis=1).mean())
    test_logit = np.asarray(x_test, dtype=np.float64) @ w + b
    train_logit = x_train @ w + b
    acc = float(np.mean((test_logit > 0).astype(int) == y_test))
    both = len(set(y_test.tolist())) == 2
    auc = float(roc_auc_score(y_test, test_logit)) if both else float("nan")
    train_acc = float(np.mean((train_logit > 0).astype(int) == y_train))
    pos, neg = test_logit[y_test == 1], test_logit[y_test == 0]
    spread = math.sqrt((pos.var() + neg.var()) / 2) if len(pos) and len(neg) else 0.0
    sep = float((pos.mean() - neg.mean()) / spread) if spread > 0 else 0.0
    prob = 1.0 / (1.0 + np.exp(-test_logit))
    return Probe(layer, w, b, acc, auc, train_acc, typical, sep, expected_calibration_error(y_test, prob),
                 log_loss(y_test, test_logit), chosen, temperature)


@dataclass(frozen=True)
class ProbeSet:
    """Probes of several rows and how long collecting and fitting took (seconds)."""

    probes: dict[int, Probe]
    capture_s: float
    fit_s: float
    states: torch.Tensor | None = None


def train_probes(states: torch.Tensor, labels: Sequence[int], splits: Sequence[str], layers: Sequence[int],
                 c: float | None = None, kind: str = "logistic") -> dict[int, Probe]:
    """One probe per row in ``layers`` from (n, N+1, d) states."""
    y = np.asarray(labels, dtype=int)
    train = np.asarray([s == "train" for s in splits])
    x = states.numpy()
    return {layer: fit_probe(layer, x[train, layer], y[train], x[~train, layer], y[~train], c, kind)
            for layer in layers}


def timed_train(lm: LoadedModel, texts: Sequence[str], labels: Sequence[int], splits: Sequence[str],
                layers: Sequence[int], pooling: str = "last", progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None, kind: str = "logistic",
                c: float | None = None) -> ProbeSet:
    """Collect states and fit the probes, timing each part (the states come back too)."""
    t0 = time.perf_counter()
    states = collect_states(lm, texts, pooling, progress, should_stop)
    t1 = time.perf_counter()
    probes = train_probes(states, labels, splits, layers, c, kind)
    return ProbeSet(probes, t1 - t0, time.perf_counter() - t1, states)
