"""``python -m explorer concept-eval``: how well concepts are probed and steered.

1. Every shipped concept set is trained on every row (calibrated logistic probes); the best row's
   held-out accuracy, AUC and calibration error are printed, with the time the sentiment concept
   took to train.
2. On the project's own negative review openings (no probe saw them), 30-token greedy continuations
   with no steering, fixed-coefficient steering along the sentiment CAV (3 strengths) and GCAV removal
   of negative sentiment (3 values of p0), judged by VADER (compound >= 0.05 is positive); fluency is
   the perplexity of the continuation under the unsteered model.
3. Real reviews that no one here wrote (``concept_eval_real``): probes, GCAV-Output, the layer sweep on
   validation openings, and held-out test openings with two judges, bootstrap intervals, the fixed
   coefficient at matched perplexity, an ActAdd baseline and several concepts at once.

The last line is JSON (the keys of part 2 at the top level, part 3 under ``real``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from explorer.core.models import LoadedModel, load_model
from explorer.methods.concepts import Concept, ConceptData, negative_openings, shipped, shipped_names
from explorer.methods.concepts.judges import vader_scores
from explorer.methods.concepts.steer_eval import generate, perplexity
from explorer.tools.concept_eval_real import run_real

SENTIMENT = "negative_sentiment"
FIXED_ALPHAS = (0.25, 0.5, 1.0)
GCAV_P0 = (0.1, 0.01, 0.001)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--quick", action="store_true",
                   help="small sets (the sentiment set in full), 8 openings, 12 tokens: about a minute")
    p.add_argument("--max-new-tokens", type=int, default=30)
    p.add_argument("--layers", default="", help="steering rows, comma separated (default: the 3 most accurate)")
    p.add_argument("--json", help="also write the full report (with every continuation) to this file")
    p.add_argument("--no-real", action="store_true", help="skip the evaluation on real reviews")


def subset(data: ConceptData, per_side_train: int, per_side_test: int) -> ConceptData:
    """The first prompts of each side and split (the quick run)."""
    return data.take(per_side_train, per_side_test)


def judge_positive(texts: Sequence[str]) -> list[float]:
    """VADER compound score of each text (>= 0.05 counts as positive)."""
    return [float(v) for v in vader_scores(texts)]


def run_condition(lm: LoadedModel, prompts: Sequence[str], n: int, ctx: Callable[[], contextlib.AbstractContextManager],
                  name: str) -> dict:
    with ctx():
        conts = generate(lm, prompts, n)
    texts = [lm.tokenizer.decode(c, skip_special_tokens=True) for c in conts]
    scores = judge_positive(texts)
    ppl = perplexity(lm, prompts, conts)
    finite = [p for p in ppl if math.isfinite(p)]
    return {"condition": name, "success": float(np.mean([s >= 0.05 for s in scores])),
            "mean_compound": float(np.mean(scores)), "ppl": float(np.mean(finite)) if finite else float("nan"),
            "texts": texts}


def probe_table(lm: LoadedModel, quick: bool, out) -> tuple[dict[str, Concept], dict]:
    concepts, best = {}, {}
    for name in shipped_names():
        data = shipped(name)
        if quick and name != SENTIMENT:  # the steered concept keeps its full set: its probes matter
            data = subset(data, 10, 4)
        t0 = time.perf_counter()
        c = Concept.train(lm, data)
        secs = time.perf_counter() - t0
        top = c.best_layers(1)[0]
        p = c.probe(top)
        concepts[name] = c
        best[name] = {"layer": top, "accuracy": p.accuracy, "auc": p.auc, "ece": p.ece, "train_seconds": secs,
                      "capture_seconds": c.meta["capture_s"], "fit_seconds": c.meta["fit_s"]}
        n = len(data.texts)
        print(f"{name:<20} best layer {top:>2}: held-out accuracy {p.accuracy:.3f}, AUC {p.auc:.3f}, ECE {p.ece:.3f} "
              f"(C {p.c:g}, T {p.temperature:.2f}; trained on {n} prompts x {len(c.layers)} rows in {secs:.1f} s: "
              f"states {c.meta['capture_s']:.1f} s, probes {c.meta['fit_s']:.1f} s)", file=out)
    return concepts, best


def evaluate(lm: LoadedModel, *, quick: bool = False, max_new_tokens: int = 30, layers: Sequence[int] | None = None,
             out=None, real: bool = True) -> dict:
    out = out if out is not None else sys.stdout  # read at call time: the stream may have been replaced
    print(f"Concept probes on {lm.model_id} ({torch.get_num_threads()} CPU threads)", file=out)
    concepts, best = probe_table(lm, quick, out)
    sent = concepts[SENTIMENT]
    rows = list(layers) if layers else sent.best_layers(3)
    prompts = negative_openings()[:8] if quick else negative_openings()
    n = min(max_new_tokens, 12) if quick else max_new_tokens
    print(f"\nSteering {len(prompts)} held-out negative openings, {n} greedy tokens, rows {rows} "
          f"(judge: VADER compound >= 0.05; fluency: perplexity under the unsteered model)", file=out)
    conditions = [run_condition(lm, prompts, n, contextlib.nullcontext, "none")]
    for a in FIXED_ALPHAS:
        conditions.append(run_condition(lm, prompts, n, lambda a=a: sent.steer_fixed(lm, a, "remove", rows),
                                        f"fixed alpha={a}"))
    for p0 in GCAV_P0:
        conditions.append(run_condition(lm, prompts, n, lambda p0=p0: sent.steer(lm, "remove", p0=p0, layers=rows),
                                        f"gcav p0={p0}"))
    for c in conditions:
        print(f"  {c['condition']:<16} positive {c['success']:.2f}  mean compound {c['mean_compound']:+.2f}  "
              f"perplexity {c['ppl']:.1f}   e.g. {prompts[0]!r} -> {c['texts'][0]!r}", file=out)
    fixed_c = [c for c in conditions if c["condition"].startswith("fixed")]
    gcav_c = [c for c in conditions if c["condition"].startswith("gcav")]
    bf = max(fixed_c, key=lambda c: (c["success"], -c["ppl"]))
    bg = max(gcav_c, key=lambda c: (c["success"], -c["ppl"]))
    extra = {"real": run_real(lm, quick, out)} if real else {}
    return {"model": lm.model_id, "quick": quick, "layers": rows, "n_prompts": len(prompts), "max_new_tokens": n,
            "base_success": conditions[0]["success"], "best_fixed_success": bf["success"],
            "best_fixed": bf["condition"], "gcav_success": bg["success"], "best_gcav": bg["condition"],
            "base_ppl": conditions[0]["ppl"], "best_fixed_ppl": bf["ppl"], "gcav_ppl": bg["ppl"],
            "probe_best_acc": {k: v["accuracy"] for k, v in best.items()},
            "probe_best_auc": {k: v["auc"] for k, v in best.items()},
            "sentiment_train_seconds": best[SENTIMENT]["train_seconds"],
            "sentiment_capture_seconds": best[SENTIMENT]["capture_seconds"],
            "sentiment_fit_seconds": best[SENTIMENT]["fit_seconds"],
            "probe_best_ece": {k: v["ece"] for k, v in best.items()}, "conditions": conditions, **extra}


def run(args: argparse.Namespace) -> int:
    from explorer.core.errors import InputError

    try:
        layers = [int(x) for x in args.layers.split(",") if x.strip()] if args.layers else None
    except ValueError as e:
        raise InputError(f"--layers must be whole numbers separated by commas; got {args.layers!r}.") from e
    if args.max_new_tokens < 1 or args.max_new_tokens > 200:
        raise InputError("--max-new-tokens must be from 1 to 200.")
    lm = load_model(args.model)
    report = evaluate(lm, quick=args.quick, max_new_tokens=args.max_new_tokens, layers=layers, real=not args.no_real)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
    short = {k: v for k, v in report.items() if k != "conditions"}
    if "real" in short:
        short["real"] = {k: v for k, v in short["real"].items() if k not in ("sweep", "probe_rows", "hypothesis")}
    print(json.dumps(short, default=str))
    return 0
