"""A concept taught from examples: its probes per row, its CAVs, grid colouring, steering, files.

    >>> c = Concept.train(lm, "negative_sentiment")          # a shipped set, every row
    >>> c.best_layers(3), c.probe(12).accuracy, c.vector(12)
    >>> with c.steer(lm, "remove", k=2) as log:              # GCAV, p0 = 10^-2
    ...     text = greedy_text(lm, "The hotel was dirty and")
    >>> c.colour(grid)                                       # a ColourLayer: P(concept) per cell
    >>> c.save("neg.safetensors"); Concept.load("neg.safetensors", lm)
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from explorer.core.errors import InputError
from explorer.core.grid import Grid
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel
from explorer.core.version import __version__
from explorer.methods.colouring import ColourLayer
from explorer.methods.concepts.dataset import ConceptData, shipped
from explorer.methods.concepts.gcav import (
    MODES,
    StepLog,
    Target,
    check_layers,
    check_mode,
    fixed,
    gcav,
    p0_from_strength,
    target_logit,
)
from explorer.methods.concepts.probe import POOLINGS, PROBE_KINDS, Probe, timed_train

CONCEPT_SCALE = [[0.0, "#eff6ff"], [0.5, "#f5f5f4"], [1.0, "#7e22ce"]]
_ARRAYS = ("b", "accuracy", "auc", "train_accuracy", "typical_norm", "separation")
_NEW_ARRAYS = ("ece", "log_loss", "c", "temperature")  # absent from files written before calibration


def file_stem(name: str) -> str:
    """A concept name made safe for a file name: anything but letters, digits, '-', '_' and '.' becomes
    '_', and no leading dots (so 'a/b' or '../x' can never leave the folder it is written to)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).lstrip(".") or "concept"
    return stem[:80]


@dataclass
class Concept:
    """Probes of one concept by grid row, for one model; ``meta`` holds provenance (data, timing)."""

    name: str
    model_id: str
    pooling: str
    probes: dict[int, Probe]
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ training and access
    @classmethod
    def train(cls, lm: LoadedModel, data: ConceptData | str, *, layers: Sequence[int] | None = None,
              pooling: str = "last", progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None, probe: str = "logistic",
              c: float | None = None) -> Concept:
        """Capture every prompt's states (in the caller's context: an applied edit is seen) and fit
        one probe per row in ``layers`` (default: all rows 0..N). ``probe``: ``logistic`` (calibrated;
        ``c=None`` chooses C by cross-validated log-loss) or ``mean-difference`` (see ``probe.py``)."""
        if isinstance(data, str):
            data = shipped(data)
        if pooling not in POOLINGS:
            raise InputError(f"Pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
        if probe not in PROBE_KINDS:
            raise InputError(f"The probe kind must be one of {', '.join(PROBE_KINDS)}; got {probe!r}.")
        rows = list(range(lm.n_layers + 1)) if layers is None else check_layers(lm, list(layers))
        ps = timed_train(lm, data.texts, data.labels, data.splits, rows, pooling, progress, should_stop, probe, c)
        meta = {"data": data.provenance(), "texts": list(data.texts), "labels": list(data.labels),
                "splits": list(data.splits), "capture_s": ps.capture_s, "fit_s": ps.fit_s, "probe": probe,
                "variant": MODEL_VARIANT.get(), "version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **{k: v for k, v in lm.provenance().items() if k != "model_id"}}
        return cls(data.name, lm.model_id, pooling, ps.probes, meta)

    @property
    def kind(self) -> str:
        """The probe kind (``logistic`` or ``mean-difference``)."""
        return str(self.meta.get("probe", "logistic"))

    def with_layer_choice(self, layers: Sequence[int], p0: float | None = None, how: str = "",
                          mode: str = "remove") -> Concept:
        """This concept with a chosen steering group (and the p0 chosen with it, for ``mode``) saved in its
        metadata and used by default by :meth:`steer`, :meth:`target` and the commands, e.g. the winner
        of a layer sweep."""
        rows = sorted({int(r) for r in layers})
        for r in rows:
            self.probe(r)
        choice: dict = {"layers": rows, "how": how, "mode": check_mode(mode)}
        if p0 is not None:
            target_logit(p0)
            choice["p0"] = float(p0)
        return Concept(self.name, self.model_id, self.pooling, self.probes, {**self.meta, "layer_choice": choice})

    def default_layers(self) -> list[int]:
        """The saved layer choice (a sweep's winner) if there is one, else the 3 most accurate rows."""
        choice = self.meta.get("layer_choice")
        if isinstance(choice, dict) and choice.get("layers"):
            return [int(r) for r in choice["layers"]]
        return self.best_layers(3)

    @property
    def layers(self) -> list[int]:
        return sorted(self.probes)

    def probe(self, layer: int) -> Probe:
        if layer not in self.probes:
            raise InputError(f"The concept '{self.name}' has no probe at layer {layer!r}; it has layers "
                             f"{self.layers[0]} to {self.layers[-1]}.")
        return self.probes[layer]

    def vector(self, layer: int, scaled: bool = False) -> torch.Tensor:
        """The CAV v = w/||w|| at ``layer`` (float32); ``scaled``: times the typical state norm there."""
        p = self.probe(layer)
        v = p.vector * (p.typical_norm if scaled else 1.0)
        return torch.as_tensor(v, dtype=torch.float32)

    def curve(self) -> pd.DataFrame:
        """Held-out accuracy and AUC per row: columns layer, accuracy, auc, train_accuracy."""
        return pd.DataFrame([self.probes[r].record() for r in self.layers])

    def best_layers(self, n: int = 3) -> list[int]:
        """The ``n`` rows with the highest held-out accuracy (AUC, then separation break ties)."""
        p = self.probes
        ranked = sorted(self.layers, key=lambda r: (-p[r].accuracy, -np.nan_to_num(p[r].auc), -p[r].separation, r))
        return sorted(ranked[:max(1, n)])

    def content_id(self) -> str:
        """A hash of what the concept computes (name, model, pooling and every probe), for cache keys."""
        h = hashlib.sha1(repr((self.name, self.model_id, self.pooling)).encode())
        for r in self.layers:
            p = self.probes[r]
            h.update(repr((r, p.b, p.typical_norm)).encode())
            h.update(np.ascontiguousarray(p.w, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def check_model(self, lm: LoadedModel) -> None:
        if self.model_id != lm.model_id:
            raise InputError(f"The concept '{self.name}' was trained on '{self.model_id}', not '{lm.model_id}'.")

    # ------------------------------------------------------------------ steering
    def target(self, mode: str = "remove", p0: float | None = None, k: float | None = None) -> Target:
        """A GCAV target from ``p0`` or the strength ``k`` (p0 = 1 - 10^-k to add, 10^-k to remove); with
        neither, the p0 saved with the layer choice for this mode, else k = 2."""
        if p0 is None and k is None:
            choice = self.meta.get("layer_choice")
            if isinstance(choice, dict) and choice.get("p0") is not None and choice.get("mode", "remove") == mode:
                p0 = float(choice["p0"])
        if p0 is None:
            p0 = p0_from_strength(2.0 if k is None else k, mode)
        return Target(self.name, self.probes, mode, p0)

    @contextlib.contextmanager
    def steer(self, lm: LoadedModel, mode: str = "remove", *, p0: float | None = None, k: float | None = None,
              layers: Sequence[int] | None = None) -> Iterator[StepLog]:
        """GCAV steering in this context (default rows: the saved layer choice, else the 3 most accurate);
        yields the eps log."""
        self.check_model(lm)
        with gcav(lm, [self.target(mode, p0, k)], list(layers) if layers else self.default_layers()) as log:
            yield log

    @contextlib.contextmanager
    def steer_fixed(self, lm: LoadedModel, alpha: float, mode: str = "remove",
                    layers: Sequence[int] | None = None) -> Iterator[None]:
        """The fixed-coefficient comparison along the same CAV (``alpha`` typical norms)."""
        self.check_model(lm)
        with fixed(lm, self.probes, list(layers) if layers else self.default_layers(), alpha, mode):
            yield

    # ------------------------------------------------------------------ readings
    def colour(self, grid: Grid, cols: Sequence[int] | None = None) -> ColourLayer:
        """P(concept) at every cell (rows without a probe are NaN); hover shows the probability."""
        if grid.provenance.get("model_id") not in (None, self.model_id) or grid.hidden.shape[-1] != len(
                next(iter(self.probes.values())).w):
            raise InputError(f"The concept '{self.name}' was trained on another model than this grid's.")
        cols = list(range(grid.n_tokens)) if cols is None else [int(c) for c in cols]
        values = np.full((grid.n_rows, len(cols)), np.nan)
        hover = [["" for _ in cols] for _ in range(grid.n_rows)]
        for r in range(grid.n_rows):
            p = self.probes.get(r)
            if p is None:
                continue
            states = grid.hidden[r, cols]
            values[r] = p.prob(states)
            far = np.linalg.norm(states.double().numpy(), axis=1) > 8 * p.typical_norm
            for j, c in enumerate(cols):
                note = "<br>(state far outside the probe's training range)" if far[j] else ""
                hover[r][j] = (f"<b>layer {r} · {html.escape(repr(grid.tokens[c]))} (pos {c})</b><br>"
                               f"P({html.escape(self.name)}) = {values[r, j]:.3f}<br>probe held-out accuracy "
                               f"{p.accuracy:.2f}{note}")
        return ColourLayer(f"concept: {self.name}", values, hover, CONCEPT_SCALE, 0.0, 1.0, f"P({self.name})")

    def read(self, interpreter, settings, layers: Sequence[int] | None = None) -> dict[int, str]:
        """SelfIE readings of the CAV at ``layers`` (default: the best 3), scaled to the typical norm."""
        rows = list(layers) if layers else self.best_layers(3)
        vecs = torch.stack([self.vector(r, scaled=True) for r in rows])
        ids = interpreter.generate_now(vecs, settings).ids
        tok = interpreter.lm.tokenizer
        return {r: tok.decode(i, skip_special_tokens=True).strip() for r, i in zip(rows, ids)}

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """One ``.safetensors`` file: w (R, d), b and scores per row as float64 tensors, and JSON
        provenance (name, model, pooling, the examples, timing) in the metadata; no pickle."""
        from safetensors.torch import save_file

        rows = self.layers
        tensors = {"layers": torch.tensor(rows, dtype=torch.int64),
                   "w": torch.from_numpy(np.stack([self.probes[r].w for r in rows]))}
        for key in _ARRAYS + _NEW_ARRAYS:
            tensors[key] = torch.tensor([float(getattr(self.probes[r], key)) for r in rows], dtype=torch.float64)
        head = {"name": self.name, "model_id": self.model_id, "pooling": self.pooling, "meta": self.meta,
                **(extra or {})}
        path = Path(path)
        save_file(tensors, str(path), metadata={"explorer_concept": json.dumps(head, default=str)})
        return path

    @classmethod
    def load(cls, path: str | Path, lm: LoadedModel | None = None) -> Concept:
        """Inverse of :meth:`save`; given ``lm``, checks the model and the state size."""
        return load_with_extra(path, lm)[0]


@dataclass(frozen=True)
class Steering:
    """A concept steering as a value (what a session holds): GCAV toward each concept's target at
    ``layers``, or (``kind="fixed"``) ``alpha`` typical norms along the first concept's CAV."""

    concepts: tuple[Concept, ...]
    modes: tuple[str, ...]
    p0s: tuple[float, ...]
    layers: tuple[int, ...]
    kind: str = "gcav"
    alpha: float = 0.0

    @contextlib.contextmanager
    def context(self, lm: LoadedModel, log: StepLog | None = None) -> Iterator[StepLog | None]:
        for c in self.concepts:
            c.check_model(lm)
        if self.kind == "fixed":
            with fixed(lm, self.concepts[0].probes, list(self.layers), self.alpha, self.modes[0]):
                yield None
            return
        targets = [c.target(m, p0) for c, m, p0 in zip(self.concepts, self.modes, self.p0s)]
        with gcav(lm, targets, list(self.layers), log=log) as out:
            yield out

    def describe(self) -> str:
        if self.kind == "fixed":
            return (f"fixed-coefficient steering ({self.modes[0]} '{self.concepts[0].name}', alpha {self.alpha}) "
                    f"at rows {list(self.layers)}")
        parts = ", ".join(f"{m} '{c.name}' to p0={p:g}" for c, m, p in zip(self.concepts, self.modes, self.p0s))
        return f"GCAV ({parts}) at rows {list(self.layers)}"


def _check_head(head: dict, name: str) -> None:
    """The JSON part of a concept file, refused with one sentence when a field is not what we write."""
    if not isinstance(head.get("name"), str) or not head["name"].strip():
        raise InputError(f"'{name}' has a concept name that is not a piece of text.")
    if not isinstance(head.get("model_id"), str):
        raise InputError(f"'{name}' does not say which model it was trained on.")
    if head.get("pooling") not in POOLINGS:
        raise InputError(f"'{name}' has pooling {head.get('pooling')!r}; it must be one of {', '.join(POOLINGS)}.")
    if not isinstance(head.get("meta", {}), dict):
        raise InputError(f"'{name}' has corrupt metadata.")


def check_steer_settings(steer, concept: Concept, lm: LoadedModel | None, where: str) -> dict:
    """A saved steering (``{"mode", "p0", "layers"}``) validated like typed input; one sentence otherwise."""
    if not isinstance(steer, dict) or not steer:
        raise InputError(f"{where} has an empty or unreadable steering setting.")
    mode, p0, layers = steer.get("mode"), steer.get("p0"), steer.get("layers")
    if mode not in MODES:
        raise InputError(f"{where} has steering mode {mode!r}; it must be 'add' or 'remove'.")
    if isinstance(p0, bool) or not isinstance(p0, (int, float)) or not math.isfinite(p0) or not 0 < p0 < 1:
        raise InputError(f"{where} has steering target p0 = {p0!r}; it must be strictly between 0 and 1.")
    if not isinstance(layers, list) or not layers:
        raise InputError(f"{where} has no steering layers.")
    for r in layers:
        if isinstance(r, bool) or not isinstance(r, int) or r not in concept.probes or (
                lm is not None and not 0 <= r <= lm.n_layers):
            raise InputError(f"{where} steers at layer {r!r}, where the concept has no probe.")
    return {"mode": mode, "p0": float(p0), "layers": sorted(set(layers))}


def load_with_extra(path: str | Path, lm: LoadedModel | None = None) -> tuple[Concept, dict]:
    """A saved concept and the extra settings saved with it (e.g. a steering), every field checked:
    a file that is not what :meth:`Concept.save` writes is refused here, with one sentence."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The concept file '{path}' does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("explorer_concept")
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except Exception as e:
        raise InputError(f"'{path.name}' is not a readable concept file (safetensors): {type(e).__name__}.") from e
    if not raw:
        raise InputError(f"'{path.name}' has no SelfIE Explorer concept metadata.")
    try:
        head = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InputError(f"'{path.name}' has corrupt concept metadata.") from e
    if not isinstance(head, dict):
        raise InputError(f"'{path.name}' has corrupt concept metadata.")
    _check_head(head, path.name)
    try:
        rows = [int(r) for r in t["layers"].tolist()]
        w = t["w"].double().numpy()
        if w.ndim != 2 or w.shape[0] != len(rows) or not rows:
            raise ValueError("shape")
        extra = {k: t[k].double().numpy() if k in t else None for k in _NEW_ARRAYS}
        probes = {}
        for i, r in enumerate(rows):
            new = [float(extra[k][i]) if extra[k] is not None else (1.0 if k == "temperature" else float("nan"))
                   for k in _NEW_ARRAYS]
            probes[r] = Probe(r, w[i].copy(), *(float(t[k][i]) for k in _ARRAYS), *new)
        concept = Concept(head.pop("name"), head.pop("model_id"), head.pop("pooling"), probes, head.pop("meta", {}))
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise InputError(f"'{path.name}' has corrupt concept data.") from e
    if len(set(rows)) != len(rows) or min(rows) < 0:
        raise InputError(f"'{path.name}' has a probe at layer {min(rows)}; layers start at 0.")
    if not np.isfinite(w).all() or not all(math.isfinite(p.b) and math.isfinite(p.typical_norm)
                                           for p in probes.values()):
        raise InputError(f"'{path.name}' has probe weights that are not finite numbers (NaN or infinity).")
    if not all(p.norm > 0 for p in probes.values()):
        raise InputError(f"'{path.name}' has a probe whose weights are all zero.")
    if lm is not None:
        concept.check_model(lm)
        if t["w"].shape[1] != lm.hidden_size or max(rows) > lm.n_layers:
            raise InputError(f"'{path.name}' does not fit this model's states.")
    choice = concept.meta.get("layer_choice")
    if choice is not None:
        check_steer_settings({"mode": choice.get("mode", "remove"), "p0": choice.get("p0", 0.5),
                              "layers": choice.get("layers")} if isinstance(choice, dict) else None, concept, lm,
                             f"'{path.name}' (its layer choice)")
    if "steer" in head:
        head["steer"] = check_steer_settings(head["steer"], concept, lm, f"'{path.name}'")
    return concept, head
