"""The real-data half of ``concept-eval``: does GCAV move text that no one here wrote?

1. Probes on real review sentences (``explorer/data/reviews``): the calibrated logistic probe and the
   mean-difference probe from the same training states, each row's held-out accuracy, AUC and ECE
   (held out = the validation split), and the calibration hypothesis checked on 120 examples.
2. GCAV-Output (full run): a probe trained on the model's own continuations of review openings,
   labelled by VADER.
3. The layer sweep on validation openings picks the probe, the layer group and p0.
4. On held-out test openings (never used for a choice): no steering, the chosen GCAV, the other
   training mode's best, the fixed coefficient swept finely along the same direction, an ActAdd
   prompt-pair vector, and several concepts at once; shares by two judges with bootstrap 95%
   intervals, perplexity under the unsteered model, and the comparison at matched perplexity.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from explorer.core.models import LoadedModel
from explorer.methods.concepts import Concept, Steering, shipped
from explorer.methods.concepts.calibration import log_loss
from explorer.methods.concepts.gcav import fixed
from explorer.methods.concepts.output import train_output
from explorer.methods.concepts.probe import collect_states, fit_probe, train_probes
from explorer.methods.concepts.reviews import opening, openings, review_concept, reviews
from explorer.methods.concepts.steer_eval import (
    Condition,
    agreement_overall,
    matched,
    prompt_pair_probes,
    run_condition,
)
from explorer.methods.concepts.sweep import chosen, layer_groups, sweep

FULL = {"per_side": 300, "held_out": None, "val": 40, "confirm": 60, "test": 100, "tokens": 30,
        "alphas": (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2),
        "actadd": (0.02, 0.04, 0.06, 0.08, 0.1, 0.15), "output_prompts": 480}
SWEEP_BUDGET = 1.15
QUICK = {"per_side": 40, "held_out": 20, "val": 6, "confirm": 0, "test": 8, "tokens": 12,
         "alphas": (0.03, 0.06, 0.1), "actadd": (0.06,), "output_prompts": 0}


def _concepts(lm: LoadedModel, cfg: dict, out) -> tuple[dict[str, Concept], torch.Tensor, object]:
    """Both probe kinds from one capture of the reviews' states; the per-row table is printed."""
    data = review_concept(cfg["per_side"]).take(None, cfg["held_out"])
    t0 = time.perf_counter()
    states = collect_states(lm, data.texts)
    capture_s = time.perf_counter() - t0
    rows = list(range(lm.n_layers + 1))
    concepts = {}
    for kind in ("logistic", "mean-difference"):
        t1 = time.perf_counter()
        probes = train_probes(states, data.labels, data.splits, rows, kind=kind)
        meta = {"data": data.provenance(), "probe": kind, "capture_s": capture_s, "fit_s": time.perf_counter() - t1}
        concepts[f"input-{kind}"] = Concept(data.name, lm.model_id, "last", probes, meta)
    c = data.counts()
    print(f"\nReal reviews: probes on {c['train_pos'] + c['train_neg']} training sentences, scored on "
          f"{c['test_pos'] + c['test_neg']} validation sentences (states {capture_s:.1f} s)", file=out)
    print("  row | logistic: acc   AUC   ECE  logloss  C      T    |w|   | mean-difference: acc   AUC   ECE  "
          "logloss |w|", file=out)
    for r in range(4, lm.n_layers + 1, 3):
        a, b = concepts["input-logistic"].probe(r), concepts["input-mean-difference"].probe(r)
        print(f"  {r:>3} |           {a.accuracy:.3f} {a.auc:.3f} {a.ece:.3f} {a.log_loss:.3f}  {a.c:<6g} "
              f"{a.temperature:4.2f} {a.norm:.3f} |                  {b.accuracy:.3f} {b.auc:.3f} {b.ece:.3f} "
              f"{b.log_loss:.3f}  {b.norm:.3f}", file=out)
    return concepts, states, data


def hypothesis(states: torch.Tensor, data, rows: list[int], out) -> list[dict]:
    """C = 1 on 120 standardised examples: separable, large ||w||, small eps? Against the calibrated fit."""
    y = np.asarray(data.labels)
    train = np.flatnonzero(np.asarray(data.splits) == "train")
    idx = np.concatenate([train[y[train] == k][:60] for k in (1, 0)])
    test = np.flatnonzero(np.asarray(data.splits) == "test")
    s0 = np.log(0.01 / 0.99)
    found = []
    print("\nCalibration hypothesis (120 training sentences, 576 dimensions): C = 1 versus C by log-loss + T", file=out)
    for r in rows:
        x = states[:, r].double().numpy()
        norm = float(np.linalg.norm(x[idx], axis=1).mean())
        for label, c in (("C=1, no T", 1.0), ("calibrated", None)):
            p = fit_probe(r, x[idx], y[idx], x[test], y[test], c, calibrate=c is None)
            logit = x[test] @ p.w + p.b
            neg = logit[y[test] == 1]
            eps = float(np.median(np.maximum(neg - s0, 0) / p.norm) / norm)
            rec = {"row": r, "probe": label, "train_accuracy": p.train_accuracy, "w_norm": p.norm,
                   "held_out_log_loss": log_loss(y[test], logit), "auc": p.auc, "median_eps_ratio_p0_0.01": eps}
            found.append(rec)
            print(f"  row {r:>2} {label:<11} train acc {p.train_accuracy:.2f}  ||w|| {p.norm:.3f}  held-out log-loss "
                  f"{rec['held_out_log_loss']:.3f}  AUC {p.auc:.3f}  median eps/|e| at p0=0.01 {eps:.3f}", file=out)
    return found


def _line(c: Condition, base: Condition, out) -> dict:
    s = c.summary(base)
    lift = "" if c is base else (f"  lift {s['vader_lift']:+.2f} [{s['vader_lift_ci'][0]:+.2f},{s['vader_lift_ci'][1]:+.2f}]"
                                  f" / {s['afinn_lift']:+.2f} [{s['afinn_lift_ci'][0]:+.2f},{s['afinn_lift_ci'][1]:+.2f}]"
                                  f"  ppl x{s['ppl_ratio']:.2f}")
    step = f"  max|step|/norm {s['largest_step_ratio']:.2f}" if "largest_step_ratio" in s else ""
    print(f"  {c.name:<34} VADER+ {c.vader:.2f} [{s['vader_ci'][0]:.2f},{s['vader_ci'][1]:.2f}]  AFINN+ {c.afinn:.2f} "
          f"[{s['afinn_ci'][0]:.2f},{s['afinn_ci'][1]:.2f}]  ppl {c.mean_ppl:5.2f}  distinct-2 {s['distinct2']:.2f}"
          f"{lift}{step}", file=out)
    return s


def multi_concept(lm: LoadedModel, steer: Concept, rows: list[int], p0: float, prompts: list[str], n: int,
                  base: Condition, quick: bool, out) -> dict:
    """Raise positive sentiment while holding the register informal (formality probe at most 0.5)."""
    data = shipped("formality").take(10, 4) if quick else shipped("formality")
    form = Concept.train(lm, data, layers=rows)
    both = Steering((steer, form), ("remove", "remove"), (p0, 0.5), tuple(rows))
    cond = run_condition(lm, prompts, n, lambda: both.context(lm), "GCAV sentiment + hold formality<=0.5")
    alone = run_condition(lm, prompts, n, lambda: steer.steer(lm, "remove", p0=p0, layers=rows), "GCAV sentiment alone")
    probe = form.probe(rows[-1])

    def formal(texts) -> float:  # P(formal) of each continuation, read at the last steered row
        st = collect_states(lm, [p + t for p, t in zip(prompts, texts)])
        return float(probe.prob(st[:, rows[-1]]).mean())

    res = {"rows": rows, "p0": p0, "formality_base": formal(base.texts), "formality_alone": formal(alone.texts),
           "formality_held": formal(cond.texts), "alone": alone.summary(base), "held": cond.summary(base)}
    print(f"\nSeveral concepts (rows {rows}): sentiment to p0={p0:g} while holding P(formal) <= 0.5", file=out)
    _line(alone, base, out)
    _line(cond, base, out)
    print(f"  mean P(formal) of the continuations: unsteered {res['formality_base']:.2f}, sentiment alone "
          f"{res['formality_alone']:.2f}, with formality held {res['formality_held']:.2f}", file=out)
    return res


def run_real(lm: LoadedModel, quick: bool, out) -> dict:
    """The whole real-data evaluation (see the module docstring); returns the figures for the JSON.
    Long because it is the protocol written out in order, each step printing what it found."""
    cfg = QUICK if quick else FULL
    concepts, states, data = _concepts(lm, cfg, out)
    ref = concepts["input-logistic"]
    found = hypothesis(states, data, ref.best_layers(3), out) if not quick else []
    if cfg["output_prompts"]:
        prompts = [o for o in dict.fromkeys(opening(r.text, 4) for r in reviews() if r.split == "train") if o]
        rng = np.random.default_rng(0)
        prompts = [prompts[i] for i in sorted(rng.choice(len(prompts), min(cfg["output_prompts"], len(prompts)),
                                                         replace=False))]
        t0 = time.perf_counter()
        concepts["output-mean-difference"] = train_output(lm, prompts)
        oc = concepts["output-mean-difference"]
        print(f"\nGCAV-Output: {len(prompts)} openings continued (sampled, 30 tokens), {len(oc.meta['texts'])} judged "
              f"non-neutral by VADER ({sum(oc.meta['labels'])} negative); {time.perf_counter() - t0:.0f} s", file=out)
    allval = openings("validation", False)
    val, confirm = allval[:cfg["val"]], allval[cfg["val"]:cfg["val"] + cfg["confirm"]]
    groups = layer_groups(lm.n_layers) if not quick else [tuple(ref.best_layers(3)), (14, 15, 16)]
    print(f"\nLayer sweep on {len(val)} validation openings (+{len(confirm)} to confirm the finalists), "
          f"{cfg['tokens']} tokens ({len(groups)} groups x {len(concepts)} probes; budget: perplexity <= "
          f"{SWEEP_BUDGET} x unsteered, a margin under the 1.2 target)", file=out)
    res = sweep(lm, concepts, val, max_new_tokens=cfg["tokens"], groups=groups, budget=SWEEP_BUDGET,
                p0s=(0.1, 0.05) if quick else (0.3, 0.2, 0.1, 0.05), first_p0=0.1, keep=1 if quick else 5,
                confirm=confirm, report=lambda s: print(s, file=out))
    print(f"  unsteered: VADER+ {res.base.vader:.2f} AFINN+ {res.base.afinn:.2f} perplexity {res.base.mean_ppl:.2f}",
          file=out)
    win = chosen(res, concepts, len(val) + len(confirm))
    if win is None:  # nothing within the budget: take the most fluent point, and say so
        least = min(res.points, key=lambda p: p.ppl)
        win = concepts[least.probe].with_layer_choice(least.layers, least.p0, "no point within the budget")
        print("  no steering stayed within the perplexity budget on validation; using the most fluent point", file=out)
    choice = win.meta["layer_choice"]
    name = next(k for k, v in concepts.items() if v.probes is win.probes)
    print(f"  chosen: {name} rows {choice['layers']} p0={choice['p0']:g}", file=out)

    test = openings("test", False, cfg["test"])
    n = cfg["tokens"]
    rows, p0 = choice["layers"], choice["p0"]
    print(f"\nHeld-out test: {len(test)} openings of negative test reviews, {n} greedy tokens; perplexity under the "
          "unsteered model; [95% bootstrap intervals]", file=out)
    base = run_condition(lm, test, n, contextlib.nullcontext, "none")
    table = {"none": _line(base, base, out)}
    gc = run_condition(lm, test, n, lambda: win.steer(lm, "remove"), f"GCAV {name} p0={win.target('remove').p0:g}")
    table["gcav"] = _line(gc, base, out)
    others = {}
    for other in concepts:
        pts = [p for p in res.points if p.probe == other and p.admissible]
        if other != name and pts:
            b = max(pts, key=lambda p: (p.success, -p.ppl))
            oc_ = run_condition(lm, test, n, lambda b=b, c=concepts[other]: c.steer(lm, "remove", p0=b.p0,
                                                                                    layers=list(b.layers)),
                                f"GCAV {other} {list(b.layers)} p0={b.p0:g}")
            others[other] = _line(oc_, base, out)
    fixed_c = []
    for a in cfg["alphas"]:
        fixed_c.append(run_condition(lm, test, n, lambda a=a: win.steer_fixed(lm, a, "remove"), f"fixed alpha={a}"))
        table[fixed_c[-1].name] = _line(fixed_c[-1], base, out)
    pair = prompt_pair_probes(lm, win, layers=rows)
    act_c = []
    for a in cfg["actadd"]:
        act_c.append(run_condition(lm, test, n, lambda a=a: fixed(lm, pair, rows, a, "add"), f"ActAdd Love-Hate a={a}"))
        table[act_c[-1].name] = _line(act_c[-1], base, out)
    vs_fixed, vs_act = matched(base, gc, fixed_c), matched(base, gc, act_c)
    s = table["gcav"]
    targets = {"lift_vader_0.25": s["vader_lift"] >= 0.25, "lift_afinn_0.25": s["afinn_lift"] >= 0.25,
               "ppl_within_1.2x": s["ppl_ratio"] <= 1.2, "beats_matched_fixed": vs_fixed["beats_all"]}
    print(f"\n  at GCAV's perplexity the fixed coefficient would give VADER+ {vs_fixed['interpolated']['vader']:.2f}, "
          f"AFINN+ {vs_fixed['interpolated']['afinn']:.2f} (interpolated); fixed settings at most as perplexing: "
          f"{vs_fixed['matched'] or 'none'}; GCAV beats all of them: {vs_fixed['beats_all']}", file=out)
    print(f"  ActAdd at GCAV's perplexity: VADER+ {vs_act['interpolated']['vader']:.2f}, AFINN+ "
          f"{vs_act['interpolated']['afinn']:.2f}; GCAV beats every ActAdd setting as fluent: {vs_act['beats_all']}",
          file=out)
    agree = agreement_overall([base, gc, *fixed_c, *act_c])
    print(f"  judges agree on {agree['agreement']:.2f} of all continuations (Cohen's kappa {agree['kappa']:.2f})", file=out)
    print("  targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()), file=out)
    multi = multi_concept(lm, win, rows, p0, test, n, base, quick, out)
    return {"chosen": {"probe": name, **choice}, "n_test": len(test), "n_validation": len(val), "table": table,
            "other_modes": others, "vs_fixed": vs_fixed, "vs_actadd": vs_act, "judge_agreement": agree,
            "targets": targets, "sweep": res.records(), "hypothesis": found, "multi_concept": multi,
            "probe_rows": {k: [c.probe(r).record() for r in c.layers] for k, c in concepts.items()}}
