"""Linear probes: which reading carries a concept, layer by layer?

The geometric probe reads a prompt's geometric features (``prompt_features``); the state probe, beside
it, reads the raw last-token residual state. Both are the same classifier: standardised features,
class-balanced logistic regression, scored by 5-fold cross-validated ROC-AUC (one-vs-rest macro
average for more than two classes), with all layers together and with each layer alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from explorer.core.errors import InputError
from explorer.methods.geometry.prompt_features import PromptFeatures


@dataclass(frozen=True)
class ProbeResult:
    """``auc_all``: AUC with every layer; ``auc_by_layer``: (len(layers),) AUC of each layer alone."""

    name: str
    layers: tuple[int, ...]
    auc_all: float
    auc_by_layer: np.ndarray
    n_prompts: int
    classes: tuple[str, ...]

    @property
    def best_layer(self) -> int:
        return self.layers[int(np.nanargmax(self.auc_by_layer))]

    @property
    def auc_best_layer(self) -> float:
        return float(np.nanmax(self.auc_by_layer))

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"probe": self.name, "layer": list(self.layers), "auc": self.auc_by_layer})


def cross_validated_auc(x: np.ndarray, y: Sequence, folds: int = 5, seed: int = 0) -> float:
    """5-fold ROC-AUC of a standardised, class-balanced logistic regression on ``x`` (P, F)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray([str(v) for v in y])
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise InputError("A probe needs prompts of at least two different labels.")
    k = min(folds, int(counts.min()))
    if k < 2:
        raise InputError("Each label needs at least two prompts for cross-validation.")
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    proba = cross_val_predict(model, x, labels, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                              method="predict_proba")
    if len(classes) == 2:
        return float(roc_auc_score(labels == classes[1], proba[:, 1]))
    return float(roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=classes))


def geometric_probe(features: PromptFeatures, labels: Sequence | None = None) -> ProbeResult:
    """The probe on geometric features: all layers (7 x N numbers by default), then each layer's own."""
    y = _labels(labels if labels is not None else features.labels, len(features.texts))
    by_layer = np.array([cross_validated_auc(features.matrix([layer]), y) for layer in features.layers])
    return ProbeResult("geometry", features.layers, cross_validated_auc(features.matrix(), y), by_layer,
                       len(y), tuple(sorted(set(map(str, y)))))


def state_probe(features: PromptFeatures, labels: Sequence | None = None, *,
                layers: Sequence[int] | None = None) -> ProbeResult:
    """The same probe on raw last-token states: each row alone, and all given rows concatenated."""
    if features.states is None:
        raise InputError("These features were computed without states; pass states=True.")
    y = _labels(labels if labels is not None else features.labels, len(features.texts))
    rows = tuple(layers) if layers is not None else tuple(range(1, features.states.shape[1]))
    by_layer = np.array([cross_validated_auc(features.states[:, r, :], y) for r in rows])
    together = features.states[:, list(rows), :].reshape(len(y), -1)
    return ProbeResult("state", rows, cross_validated_auc(together, y), by_layer, len(y),
                       tuple(sorted(set(map(str, y)))))


def _labels(labels: Sequence | None, n: int) -> list:
    if labels is None:
        raise InputError("No labels: give one label per prompt.")
    if len(labels) != n:
        raise InputError(f"{len(labels)} labels for {n} prompts: give one label per prompt.")
    return list(labels)
