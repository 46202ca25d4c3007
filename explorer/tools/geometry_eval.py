"""``python -m explorer geometry-eval``: does the geometry of the blocks carry a text's domain or a
concept, and what does reading it cost?

Prints, for the shipped domain set and a concept set, the 5-fold ROC-AUC of the geometric probe
(all layers, best single layer) beside the same probe on raw last-token states; the cost of the
geometry pass relative to a plain forward on prompts of 16, 64 and 256 tokens (interleaved runs,
medians); and the intrinsic-dimension experiment in small (a question after a topic-relevant
versus an irrelevant prefix, last-token dimension by layer). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from explorer.core.data import DATA_DIR
from explorer.core.errors import ExplorerError
from explorer.tools.paths import writable_file

DOMAINS = DATA_DIR / "domains" / "domains.csv"
CONCEPTS = DATA_DIR / "geometry" / "politeness.csv"
# (question, relevant prefix, irrelevant prefix); prefixes of similar length.
PREFIX_PAIRS = [
    ("Question: At what temperature does water boil at sea level? Answer:",
     "Water is heated in a kettle until bubbles of vapour form throughout the liquid and steam rises. "
     "At sea level the air pressure is one atmosphere.",
     "The museum opened a new wing last spring with paintings from the eighteenth century and a small "
     "cafe overlooking the sculpture garden."),
    ("Question: Which planet is closest to the Sun? Answer:",
     "The solar system has eight planets that orbit the Sun; the inner rocky planets travel on short, "
     "fast orbits close to the star.",
     "The recipe calls for two cups of flour, a pinch of salt, three eggs and a spoonful of honey, mixed "
     "slowly by hand in a bowl."),
    ("Question: How many legs does a spider have? Answer:",
     "Spiders are arachnids, not insects; their bodies have two main parts, and they spin silk to build "
     "webs and catch their prey.",
     "The train to the coast leaves every hour from platform four, and tickets can be bought at the "
     "machine beside the entrance."),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small samples (about a minute or two on a CPU)")
    p.add_argument("--model", default="default")
    p.add_argument("--concepts", default=str(CONCEPTS), help="a CSV with text and label columns")
    p.add_argument("--per-class", type=int, default=None, help="sample this many prompts of each label "
                   "(default: all; 8 with --quick)")
    p.add_argument("--features", choices=["paper", "extended"], default="paper",
                   help="the geometric probe's features: SplineLLM's 7 statistics per layer, or 9 with attention")
    p.add_argument("--figure", default=None, help="write the intrinsic-dimension plot here (HTML); default "
                   "assets/geometry_intrinsic_dimension.html for a full run, none for --quick")


def _sample(texts: list[str], labels: list[str], per_class: int | None) -> tuple[list[str], list[str]]:
    if per_class is None:
        return texts, labels
    rng = np.random.default_rng(0)
    keep: list[int] = []
    for label in sorted(set(labels)):
        idx = [i for i, v in enumerate(labels) if v == label]
        keep += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return [texts[i] for i in keep], [labels[i] for i in keep]


def probe_set(lm, name: str, texts: list[str], labels: list[str], features: str = "paper") -> dict:
    """Features and both probes for one labelled set; prints a summary and returns the figures."""
    from explorer.methods.geometry.probe import geometric_probe, state_probe
    from explorer.methods.geometry.prompt_features import prompt_features

    def progress(done: int, total: int, left: float) -> None:
        print(f"\r  {name}: {done}/{total} prompts, about {left:.0f} s left ", end="", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    feats = prompt_features(lm, texts, labels=labels, states=True, progress=progress, features=features)
    print(file=sys.stderr)
    geo, state = geometric_probe(feats), state_probe(feats)
    print(f"{name}: {len(texts)} prompts, classes {', '.join(geo.classes)} ({time.perf_counter() - t0:.0f} s)")
    print(f"  geometric probe: AUC all layers {geo.auc_all:.3f}; best single layer {geo.best_layer} "
          f"AUC {geo.auc_best_layer:.3f}")
    print(f"  state probe:     AUC all layers {state.auc_all:.3f}; best single layer {state.best_layer} "
          f"AUC {state.auc_best_layer:.3f}")
    step = max(1, len(geo.layers) // 10)
    print("  layer  " + " ".join(f"{layer:>5}" for layer in geo.layers[::step]))
    print("  geom   " + " ".join(f"{v:5.2f}" for v in geo.auc_by_layer[::step]))
    print("  state  " + " ".join(f"{v:5.2f}" for v in state.auc_by_layer[::step]))
    return {"auc_geometry_all": geo.auc_all, "auc_geometry_best_layer": geo.auc_best_layer,
            "geometry_best_layer": geo.best_layer, "auc_state_all": state.auc_all,
            "auc_state_best_layer": state.auc_best_layer, "state_best_layer": state.best_layer}


def cost(lm, repeats: int) -> dict[int, float]:
    """Median time of the geometry pass over a plain forward (same prompt, runs interleaved)."""
    import torch

    from explorer.methods.geometry.features import geometry

    ids = lm.tokenizer.encode((DATA_DIR / "corpus.txt").read_text(encoding="utf-8"))
    ratios = {}
    for n in (16, 64, 256):
        part = ids[:n]
        plain, geo = [], []
        geometry(lm, part)  # warm-up of both paths
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.inference_mode():
                lm.model(input_ids=torch.tensor([part], device=lm.device), use_cache=False, logits_to_keep=1)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            geometry(lm, part)
            geo.append(time.perf_counter() - t)
        ratios[n] = statistics.median(geo) / statistics.median(plain)
        print(f"  {n:>4} tokens: plain forward {1000 * statistics.median(plain):7.1f} ms, geometry pass "
              f"{1000 * statistics.median(geo):7.1f} ms, ratio {ratios[n]:.2f} (median of {repeats})")
    return ratios


def prefix_dimension(lm, pairs) -> tuple[np.ndarray, np.ndarray]:
    """Last-token intrinsic dimension by layer (rows 1..N): (pairs, N) after relevant and irrelevant prefixes."""
    from explorer.methods.geometry.features import geometry

    rel: list[np.ndarray] = []
    irr: list[np.ndarray] = []
    for question, relevant, irrelevant in pairs:
        for prefix, out in ((relevant, rel), (irrelevant, irr)):
            g = geometry(lm, lm.tokenizer.encode(f"{prefix}\n{question}"))
            out.append(g.intrinsic_dim[1:, -1])
    return np.array(rel), np.array(irr)


def dimension_figure(rel: np.ndarray, irr: np.ndarray, path: Path) -> None:
    import plotly.graph_objects as go

    layers = list(range(1, rel.shape[1] + 1))
    fig = go.Figure()
    fig.add_scatter(x=layers, y=rel.mean(0), name="topic-relevant prefix", mode="lines+markers")
    fig.add_scatter(x=layers, y=irr.mean(0), name="irrelevant prefix", mode="lines+markers")
    fig.update_layout(title=f"Last-token attention intrinsic dimension (mean of {len(rel)} questions)",
                      xaxis_title="layer L (block L-1)", yaxis_title="keys above 10% of the head's max, summed over heads")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True)  # standalone: no request to any other host


def run(args: argparse.Namespace) -> int:
    from explorer.core.models import load_model
    from explorer.methods.geometry.prompt_features import read_labelled_csv

    per_class = args.per_class or (8 if args.quick else None)
    if per_class is not None and per_class < 2:
        raise ExplorerError("--per-class must be at least 2 (the probe cross-validates).")
    figure = args.figure or (None if args.quick else "assets/geometry_intrinsic_dimension.html")
    writable_file(figure, "--figure", make_folder=True)
    concept_texts, concept_labels = read_labelled_csv(args.concepts)  # a bad file fails before the model loads
    lm = load_model(args.model)
    domain_texts, domain_labels = read_labelled_csv(DOMAINS)
    size = f"{per_class} prompts per label" if per_class else "every prompt"
    print(f"model {lm.model_id}, {lm.n_layers} blocks; layer L is block L-1 ({'quick' if args.quick else 'full'} run, "
          f"{size})")
    figures = probe_set(lm, "domains", *_sample(domain_texts, domain_labels, per_class), args.features)
    concept = probe_set(lm, f"concepts ({Path(args.concepts).stem})", *_sample(concept_texts, concept_labels, per_class),
                        args.features)
    print("cost of the geometry pass (eager attention + reducing hooks) relative to a plain forward:")
    ratios = cost(lm, 3 if args.quick else 9)
    rel, irr = prefix_dimension(lm, PREFIX_PAIRS[:1] if args.quick else PREFIX_PAIRS)
    print(f"last-token intrinsic dimension by layer, mean of {len(rel)} question(s): relevant vs irrelevant prefix")
    for i in range(0, rel.shape[1], max(1, rel.shape[1] // 10)) if rel.shape[1] > 10 else range(rel.shape[1]):
        print(f"  layer {i + 1:>3}: {rel[:, i].mean():7.1f} {irr[:, i].mean():7.1f}")
    print(f"  layer {rel.shape[1]:>3}: {rel[:, -1].mean():7.1f} {irr[:, -1].mean():7.1f} (last)")
    if figure:
        dimension_figure(rel, irr, Path(figure))
        print(f"figure written to {figure}")
    summary = {**{k: round(float(v), 4) for k, v in figures.items()},
               **{f"concept_{k}": round(float(v), 4) for k, v in concept.items()},
               **{f"cost_ratio_{n}": round(r, 3) for n, r in ratios.items()},
               "id_last_layer_relevant": round(float(rel[:, -1].mean()), 2),
               "id_last_layer_irrelevant": round(float(irr[:, -1].mean()), 2), "quick": bool(args.quick)}
    if not np.isfinite(list(summary.values())[:-1]).all():
        raise ExplorerError("The evaluation produced non-finite figures.")
    print(json.dumps(summary))
    return 0
