"""``python -m explorer control-eval``: how well Supervised and Reinforcement Control work here.

Supervised: for each (source cell, target concept) pair, the mean L2 distance of the source state
to the target before and after the edit (the target: at least 80% lower), and the source cell's
interpretation before and after. Reinforcement: the share of a prompt's readings that mention
an unwanted concept before and after, the reward per step, and fact retention.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from explorer.core.grid import capture
from explorer.core.models import load_model
from explorer.interpret.engine import Interpreter, make_settings
from explorer.methods.control import (
    Judge,
    TrainSettings,
    applied,
    concept_state,
    reinforcement_control,
    retention,
    supervised_control,
)
from explorer.tools.paths import writable_file

# (source prompt, layer, token index, target concept phrase)
SUPERVISED_CASES = [
    ("The Eiffel Tower is in the city of", 10, 3, "an elephant"),
    ("The Eiffel Tower is in the city of", 12, 7, "the ocean"),
    ("My favourite fruit is a ripe banana", 10, 6, "a violin"),
    ("The doctor examined the patient carefully", 14, 1, "a rocket"),
    ("She drank a cup of hot coffee this morning", 12, 6, "snow and ice"),
    ("The children played football in the park", 10, 4, "a computer"),
]
REINFORCEMENT_CASE = {"prompt": "The Eiffel Tower is a famous landmark in Paris, France", "layer": 10,
                      "concept": "Paris", "keywords": ["paris", "france", "french"]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--quick", action="store_true", help="two supervised cases and 3 reinforcement steps")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--rl-steps", type=int, default=10)
    p.add_argument("--json", help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    writable_file(args.json, "--json")
    lm = load_model(args.model)
    report = evaluate(lm, quick=args.quick, steps=args.steps, lr=args.lr, beta=args.beta, rl_steps=args.rl_steps)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k not in ("supervised", "reinforcement")}))
    return 0


def evaluate(lm, *, quick: bool = False, steps: int = 20, lr: float = 2e-3, beta: float = 10.0, rl_steps: int = 10,
             out=None) -> dict:
    out = out if out is not None else sys.stdout  # read at call time: the stream may have been replaced
    interp = Interpreter(lm)
    reading = make_settings(lm, "refers_to", max_new_tokens=12)

    def read(vec) -> str:
        ids = interp.generate_now(vec[None], reading).ids[0]
        return lm.tokenizer.decode(ids, skip_special_tokens=True).strip()

    cases = SUPERVISED_CASES[:2] if quick else SUPERVISED_CASES
    sup = []
    print(f"Supervised Control on {lm.model_id}: {steps} steps, lr {lr}, beta {beta}", file=out)
    for prompt, layer, token, concept in cases:
        target = concept_state(lm, concept, layer)
        before_grid = capture(lm, prompt)
        res = supervised_control(lm, prompt, layer, [token], target, TrainSettings(steps, lr, beta),
                                 target_desc=concept)
        with applied(lm, res.edit):
            after_grid = capture(lm, prompt)
        row = {"prompt": prompt, "layer": layer, "token": token, "token_text": before_grid.tokens[token],
               "target": concept, "target_reading": read(target),
               "distance_before": res.distances[0], "distance_after": res.distances[-1],
               "reduction": res.reduction, "before": read(before_grid.hidden[layer, token]),
               "after": read(after_grid.hidden[layer, token]), "seconds": res.seconds}
        sup.append(row)
        print(f"- {prompt!r} L{layer} {row['token_text']!r} -> {concept!r}: distance {row['distance_before']:.1f} -> "
              f"{row['distance_after']:.1f} ({100 * row['reduction']:.0f}% lower)\n"
              f"    target reads: {row['target_reading']}\n    before: {row['before']}\n    after:  {row['after']}",
              file=out)
    ok = sum(r["reduction"] >= 0.8 for r in sup)
    print(f"{ok}/{len(sup)} edits reach >= 80% lower distance; mean reduction "
          f"{100 * sum(r['reduction'] for r in sup) / len(sup):.0f}%", file=out)

    case = REINFORCEMENT_CASE
    judge = Judge(case["concept"], case["keywords"], mode="keywords")
    n_steps = 3 if quick else rl_steps
    t0 = time.perf_counter()
    rl = reinforcement_control(lm, case["prompt"], case["layer"], judge, TrainSettings(n_steps, lr, 0.0),
                               interpreter=interp)
    print(f"\nReinforcement Control: suppress {case['concept']!r} in {case['prompt']!r} at layer {case['layer']} "
          f"({n_steps} steps, keyword judge {case['keywords']}, {time.perf_counter() - t0:.0f} s)", file=out)
    print(f"  share of readings mentioning it: {rl.share_before:.2f} -> {rl.share_after:.2f}", file=out)
    print(f"  mean reward per step: {', '.join(f'{r:+.2f}' for r in rl.rewards)}", file=out)
    print(f"  fact retention: {rl.retention_before:.2f} -> {rl.retention_after:.2f}", file=out)
    return {
        "model": lm.model_id, "supervised_cases": len(sup), "supervised_reaching_80pct": ok,
        "mean_reduction": sum(r["reduction"] for r in sup) / len(sup),
        "rl_share_before": rl.share_before, "rl_share_after": rl.share_after,
        "rl_retention_before": rl.retention_before, "rl_retention_after": rl.retention_after,
        "supervised": sup,
        "reinforcement": {"rewards": rl.rewards, "before": rl.before, "after": rl.after},
        "supervised_retention": retention(lm, None),
    }
