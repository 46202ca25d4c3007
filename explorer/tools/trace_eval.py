"""``python -m explorer trace-eval``: where does the model recall the facts it knows?

Factual prompts are built from the shipped Patchscopes attribute sets ("The capital city of Canada is"
/ " Ottawa"); those whose answer is the model's top prediction are traced (ROME's noise, restoring
residual states), and the mean indirect effect is printed for (a) the subject's last token in the lower
half of the rows, (b) the prompt's last token in the upper half, (c) every other cell. The last line is
JSON with the keys facts, subject_last_lower, last_token_upper, other, seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from explorer.core.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="3 facts, 2 noise samples (a short check)")
    p.add_argument("--model", default="default")
    p.add_argument("--facts", type=int, default=None, help="trace at most this many known facts (default: all)")
    p.add_argument("--samples", type=int, default=None, help="noise samples per fact (default 5, within the 3-minute "
                   "budget on 2 CPU cores; ROME: 10; 2 with --quick)")
    p.add_argument("--noise", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the per-fact table here (CSV)")


def run(args: argparse.Namespace) -> int:
    from explorer.core.models import load_model
    from explorer.methods.tracing import TraceSettings, trace
    from explorer.methods.tracing.facts import candidate_facts, known_facts, summarise
    from explorer.tools.paths import writable_file

    if args.facts is not None and args.facts < 1:
        raise InputError(f"--facts must be at least 1; got {args.facts}.")
    writable_file(args.out)
    t0 = time.perf_counter()
    limit = 3 if args.quick and args.facts is None else args.facts
    samples = args.samples if args.samples is not None else (2 if args.quick else 5)
    settings = TraceSettings(samples=samples, noise=args.noise, seed=args.seed)
    lm = load_model(args.model)
    candidates = candidate_facts()
    facts = known_facts(lm, candidates, limit)
    print(f"{len(candidates)} candidate facts, {len(facts)} traced (the model's top prediction is the answer); "
          f"{samples} noise samples of {args.noise} x the embeddings' std", file=sys.stderr)
    traces = []
    for i, fact in enumerate(facts, 1):
        traces.append(trace(lm, fact.prompt, fact.answer, fact.subject, settings=settings))
        t = traces[-1]
        print(f"[{i}/{len(facts)}] {fact.task}: {fact.prompt!r} -> {fact.answer!r}  p_clean {t.p_clean:.3f}  "
              f"p_corrupted {t.p_corrupted:.3f}", file=sys.stderr, flush=True)
    if not traces:
        raise InputError("The model answers none of the shipped facts; nothing to trace.")
    table = summarise(traces)
    if args.out:
        table.to_csv(args.out, index=False)
    after = np.mean([_after_subject(t) for t in traces])
    means = {k: float(table[k].mean()) for k in ("subject_last_lower", "last_token_upper", "other")}
    print(f"\nmean indirect effect over {len(traces)} facts ({lm.model_id}, {lm.n_layers + 1} rows; "
          f"p_clean {table['p_clean'].mean():.3f}, p_corrupted {table['p_corrupted'].mean():.3f}):")
    print(f"  (a) subject's last token, rows 0-{lm.n_layers // 2}      {means['subject_last_lower']:+.4f}")
    print(f"  (b) prompt's last token, rows {lm.n_layers // 2 + 1}-{lm.n_layers}      {means['last_token_upper']:+.4f}")
    print(f"  (c) every other cell                  {means['other']:+.4f}")
    print(f"      (c) from the first subject token on {after:+.4f}")
    single = sum(len(t.subject_positions) == 1 for t in traces)
    print(f"  {single} of {len(traces)} subjects are one token (restoring it at row 0 restores the whole input)")
    print("  mean effect by row at the subject's last token / the prompt's last token:")
    for row in range(0, lm.n_layers + 1, 5 if lm.n_layers >= 10 else 1):
        subj = np.mean([t.effect[row, max(t.subject_positions)] for t in traces])
        last = np.mean([t.effect[row, -1] for t in traces])
        print(f"    row {row:>3}   {subj:+.4f}   {last:+.4f}")
    print(json.dumps({"facts": len(traces), **{k: round(v, 5) for k, v in means.items()},
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


def _after_subject(trace) -> float:
    """Mean effect of the (c) cells from the first subject token on (cells before it cannot change)."""
    from explorer.methods.tracing.facts import region_mask

    mask = region_mask(trace)["other"]
    mask[:, :min(trace.subject_positions)] = False
    return float(trace.effect[mask].mean()) if mask.any() else float("nan")
